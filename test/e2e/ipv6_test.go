//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/test/lab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// The dual-stack cluster of TestIPv6. Its lab is its own, so these ranges do
// not meet the suite lab's (extraRange there is in different namespaces).
var (
	gammaRange   = netip.MustParsePrefix("10.98.0.0/16")
	gammaRange6  = netip.MustParsePrefix("fd00:98::/108")
	ipv6Services = []port{
		{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080},
		{name: "dns", proto: corev1.ProtocolUDP, port: 53, target: 5353},
	}
)

// TestIPv6 runs kube-outpost for a dual-stack cluster in a second lab that
// has IPv6 everywhere, and checks both ClusterIPs of dual-stack services
// with real packets from the host: ip6tables next to iptables (or the
// mode's IPv6 objects next to its IPv4 ones).
func TestIPv6(t *testing.T) {
	needs(t, config.CanIPv6)
	if !lab.KernelHasIPv6() {
		t.Skip("this kernel has no IPv6")
	}
	if os.Getenv("KO_E2E_REMOTE") != "" {
		t.Skip("a remote lab is IPv4 only: QEMU's user networking carries the guest's traffic to the serving lab")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	l, err := lab.Start(ctx, labOptions(lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "gamma", ServiceCIDR: gammaRange, ServiceCIDRv6: gammaRange6}},
		Log:      os.Stderr,
	}))
	if err != nil {
		t.Fatalf("starting the IPv6 lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the IPv6 lab: %v", err)
		}
	})
	g1, err := l.AddPod(ctx, "g1", []int{8080}, []int{5353})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := l.AddPod(ctx, "g2", []int{8080}, []int{5353})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	gamma := l.Cluster("gamma")
	// The daemon starts IPv4 only; a reload adds the IPv6 range, and with
	// it the IPv6 backend, which every test below then uses.
	sock := statusSocket(t)
	config := func(ranges ...string) string {
		return fmt.Sprintf("mode = %q\nmin_sync_period = \"200ms\"\nstatus_socket = %q\n\n[[clusters]]\nname = \"gamma\"\nkubeconfig = %q\nservice_cidrs = [\"%s\"]\n",
			mode, sock, gamma.Kubeconfig, strings.Join(ranges, `", "`))
	}
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config(gammaRange.String())), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemonIn(t, l, cfgPath)
	eventually(t, 20*time.Second, "the IPv4-only daemon ready", func() error {
		if d.count(`msg=ready`) == 0 {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	if err := os.WriteFile(cfgPath, []byte(config(gammaRange.String(), gammaRange6.String())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the IPv6 backend added by the reload", func() error {
		if d.count(`backends added for a new IP family|a new IP family, which the running backends serve`) == 0 || d.count(`configuration reloaded`) == 0 {
			return fmt.Errorf("no IPv6 backend yet")
		}
		return nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the IPv6 rules of %s:\n%s", l.HostNS, familyRules(t, l, true))
		}
	})
	admin := gamma.Admin
	var served []string // URLs that answered while the daemon ran

	t.Run("both ClusterIPs of a dual-stack service balance over both pods, tcp and udp", func(t *testing.T) {
		ns := namespace(t, admin, "dual")
		v4, v6 := dualStackService(t, admin, ns, "web")
		slice(t, admin, ns, "web", "v4", ipv6Services, []ep{readyEP(g1.IP.String()), readyEP(g2.IP.String())})
		slice(t, admin, ns, "web", "v6", ipv6Services, []ep{readyEP(g1.IPv6.String()), readyEP(g2.IPv6.String())})
		for _, vip := range []netip.Addr{v4, v6} {
			answeredByIn(t, l, url(vip, 80), 40, "g1", "g2")
			served = append(served, url(vip, 80))
			udpAnsweredByIn(t, l, netip.AddrPortFrom(vip, 53).String(), 40, "g1", "g2")
		}
		// The IPv6 ClusterIP is proxied over IPv6 end to end: the pods see
		// the host's IPv6 address (masqueraded), not an IPv4 one.
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, hdr, err := l.HTTPGetHeader(hctx, url(v6, 80))
		hcancel()
		if err != nil {
			t.Fatal(err)
		}
		if src, err := netip.ParseAddrPort(hdr.Get("X-Remote-Addr")); err != nil || src.Addr() != l.HostIPv6 {
			t.Errorf("via %v the pod saw the client as %q (%v), want %v", v6, hdr.Get("X-Remote-Addr"), err, l.HostIPv6)
		}
		rules := familyRules(t, l, true)
		wants := []string{programmedAt(v6, 80, "tcp"), dnatText("[" + g1.IPv6.String() + "]:8080")}
		if namesPorts() {
			wants = append(wants, "gamma/dual/web:http(v6)", "gamma/dual/web:dns/UDP(v6)")
		}
		for _, want := range wants {
			if !strings.Contains(rules, want) || !hasOurs(rules) {
				t.Errorf("the IPv6 rules lack %q:\n%s", want, rules)
			}
		}
		if s := familyRules(t, l, false); strings.Contains(s, v6.String()) || !strings.Contains(s, programmedAt(v4, 80, "tcp")) {
			t.Errorf("the IPv4 rules should carry %v and not %v:\n%s", v4, v6, s)
		}
		// A mode whose one backend serves both families (ebpf mode's
		// hooks and maps) got no second one from the reload: two would
		// write the same maps, and status would list every hook twice.
		r, err := statusOf(l, sock)
		if err != nil {
			t.Fatal(err)
		}
		if dp := r.Datapath; dp != nil {
			hooks := map[string]int{}
			for _, p := range dp.Programs {
				hooks[p.Hook]++
			}
			for h, n := range hooks {
				if n > 1 {
					t.Errorf("status lists the hook %s %d times, one per backend: %v", h, n, hooks)
					break
				}
			}
		}
	})

	t.Run("a dual-stack service without endpoints is refused on its IPv6 ClusterIP", func(t *testing.T) {
		ns := namespace(t, admin, "empty")
		v4, v6 := dualStackService(t, admin, ns, "web")
		for _, vip := range []netip.Addr{v6, v4} {
			eventually(t, 60*time.Second, fmt.Sprintf("tcp to %v refused", vip), func() error { return refusedIn(l, url(vip, 80)) })
			eventually(t, 60*time.Second, fmt.Sprintf("udp to %v refused", vip), func() error {
				return udpRefusedIn(l, netip.AddrPortFrom(vip, 53).String())
			})
		}
		rules := familyRules(t, l, true)
		for _, want := range append([]string{noEndpointsAt("gamma/empty/web:http(v6)", v6, 80, "tcp"), noEndpointsAt("gamma/empty/web:dns/UDP(v6)", v6, 53, "udp")}, refusals()...) {
			if !strings.Contains(rules, want) {
				t.Errorf("the IPv6 rules lack %q:\n%s", want, rules)
			}
		}
	})

	t.Run("cleanup removes the chains of both families", func(t *testing.T) {
		if !hasOurs(familyRules(t, l, true)) || !hasOurs(familyRules(t, l, false)) {
			t.Fatal("no rules of ours in one of the families while the daemon runs")
		}
		d.stop()
		out, err := l.HostRun(context.Background(), binary, "cleanup")
		if err != nil {
			t.Fatalf("kube-outpost cleanup: %v", err)
		}
		t.Logf("cleanup said: %s", strings.TrimSpace(out))
		for _, v6 := range []bool{true, false} {
			if s := familyRules(t, l, v6); hasOurs(s) || strings.Contains(s, "OUTPOST") {
				t.Errorf("after cleanup the rules of ipv6=%v still hold ours:\n%s", v6, s)
			}
		}
		for _, u := range served {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := l.HTTPGet(ctx, u); err == nil {
				t.Errorf("%s still answers after cleanup", u)
			}
			cancel()
		}
	})
}

// dualStackService creates a RequireDualStack service with ipv6Services and
// returns its IPv4 and IPv6 ClusterIPs.
func dualStackService(t *testing.T, c kubernetes.Interface, ns, name string) (v4, v6 netip.Addr) {
	t.Helper()
	service(t, c, ns, name, ipv6Services, func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	})
	svc, err := c.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svc.Spec.ClusterIPs {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			t.Fatalf("service %s/%s: ClusterIP %q: %v", ns, name, s, err)
		case a.Is4():
			v4 = a
		default:
			v6 = a
		}
	}
	if !gammaRange.Contains(v4) || !gammaRange6.Contains(v6) {
		t.Fatalf("service %s/%s: ClusterIPs %v, want one in %v and one in %v", ns, name, svc.Spec.ClusterIPs, gammaRange, gammaRange6)
	}
	return v4, v6
}

// answeredByIn is answeredBy from the host of lab l.
func answeredByIn(t *testing.T, l *lab.Lab, u string, n int, pods ...string) {
	t.Helper()
	eventually(t, 60*time.Second, "answers from "+strings.Join(pods, ", ")+" at "+u, func() error {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			body, err := l.HTTPGet(ctx, u)
			cancel()
			if err != nil {
				return err
			}
			got[body]++
		}
		return sameAnswerers(got, pods)
	})
}

// udpAnsweredByIn checks over n datagrams, each from a new socket (a new
// flow), that exactly the pods named answer.
func udpAnsweredByIn(t *testing.T, l *lab.Lab, addr string, n int, pods ...string) {
	t.Helper()
	eventually(t, 60*time.Second, "udp answers from "+strings.Join(pods, ", ")+" at "+addr, func() error {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			body, err := l.UDPRequest(ctx, addr, "ping")
			cancel()
			if err != nil {
				return err
			}
			got[body]++
		}
		return sameAnswerers(got, pods)
	})
}

func sameAnswerers(got map[string]int, pods []string) error {
	want := map[string]bool{}
	for _, p := range pods {
		want[p] = true
		if got[p] == 0 {
			return fmt.Errorf("%s never answered; answers: %v", p, got)
		}
	}
	for p := range got {
		if !want[p] {
			return fmt.Errorf("%s answered but should not; answers: %v", p, got)
		}
	}
	return nil
}

// refusedIn is refused from the host of lab l.
func refusedIn(l *lab.Lab, u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := l.HTTPGet(ctx, u)
	if err == nil {
		return errors.New("the service answered")
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("want connection refused, got %v", err)
}

// udpRefusedIn is udpRefused from the host of lab l.
func udpRefusedIn(l *lab.Lab, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := l.UDPRequest(ctx, addr, "ping")
	if err == nil {
		return errors.New("the service answered")
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPERM) {
		return nil
	}
	return fmt.Errorf("want an immediate refusal, got %v", err)
}

// v4Rules is the nat and filter tables of iptables-save in l's host
// namespace.
func v4Rules(t *testing.T, l *lab.Lab) string {
	t.Helper()
	return saveIn(t, l, "iptables-save")
}

func saveIn(t *testing.T, l *lab.Lab, bin string) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		s, err := l.HostRun(context.Background(), bin, "-t", table)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(s)
	}
	return b.String()
}
