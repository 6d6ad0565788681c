//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-outpost/kube-outpost/internal/status"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The three clusters of TestMultiCluster share one service range, as real
// clusters built from the same defaults do. Two are mapped to local ranges;
// the third keeps its ClusterIPs as they are.
var (
	mcRange    = netip.MustParsePrefix("10.96.0.0/16")
	mcLocalA   = netip.MustParsePrefix("100.64.0.0/16")
	mcLocalB   = netip.MustParsePrefix("100.65.0.0/16")
	mcAllowed  = netip.MustParsePrefix("192.0.2.0/28")
	mcSameIP   = netip.MustParseAddr("10.96.0.100")
	mcPorts    = []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080}}
	mcHostAddr = "10.250.0.2" // the lab host's own address
)

// multi is the lab of three clusters with one service range that
// TestMultiCluster and TestOneClusterDown share: the first of them to run
// starts it, and the suite closes it at its end.
var multi struct {
	once sync.Once
	lab  *lab.Lab
	pods map[string]*lab.Pod // ma, mb and mc, one for each cluster
	err  error
}

// multiLab returns the shared three-cluster lab, starting it if no test has.
func multiLab(t *testing.T) (*lab.Lab, map[string]*lab.Pod) {
	t.Helper()
	if os.Getenv("KO_E2E_REMOTE") != "" {
		t.Skip("a remote lab cannot start apiservers of its own, and this test needs three with the same service range")
	}
	multi.once.Do(func() { multi.lab, multi.pods, multi.err = startMultiLab() })
	if multi.err != nil {
		t.Fatalf("starting the multi-cluster lab: %v", multi.err)
	}
	return multi.lab, multi.pods
}

func startMultiLab() (_ *lab.Lab, _ map[string]*lab.Pod, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, labOptions(lab.Options{
		Clusters: []lab.ClusterOptions{
			{Name: "a", ServiceCIDR: mcRange}, {Name: "b", ServiceCIDR: mcRange}, {Name: "c", ServiceCIDR: mcRange},
		},
		Log: os.Stderr,
	}))
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	pods := map[string]*lab.Pod{}
	for _, name := range []string{"ma", "mb", "mc"} {
		p, err := l.AddPod(ctx, name, []int{8080}, nil)
		if err != nil {
			return nil, nil, err
		}
		pods[name] = p
	}
	// The host has no default route: the local ranges and the external
	// IPs need one for the first routing decision, made before the DNAT.
	// The router never sees those addresses.
	for _, r := range []netip.Prefix{mcLocalA, mcLocalB, mcAllowed} {
		if out, err := l.HostRun(ctx, "ip", "route", "add", r.String(), "via", "10.250.0.1"); err != nil {
			return nil, nil, fmt.Errorf("%v\n%s", err, out)
		}
	}
	return l, pods, nil
}

// closeMultiLab closes the shared three-cluster lab, if a test started it.
func closeMultiLab() {
	if multi.lab != nil {
		if err := multi.lab.Close(); err != nil {
			fmt.Println("closing the multi-cluster lab:", err)
		}
	}
}

// TestMultiCluster runs one kube-outpost for three clusters with the same
// service range, and checks with real packets that each cluster's service
// is reached at its own local address, that external IPs are captured only
// where allowed, and that hostile endpoints are dropped.
func TestMultiCluster(t *testing.T) {
	l, pods := multiLab(t)
	ctx := context.Background()
	sock := statusSocket(t)
	cfgPath := mcConfig(t, l, sock, map[string]string{
		"a": fmt.Sprintf("local_service_cidr = %q\nallow_external_ips = [%q]\n", mcLocalA, mcAllowed),
		"b": fmt.Sprintf("local_service_cidr = %q\nallow_external_ips = [%q]\nendpoint_cidrs = [\"10.244.0.0/16\"]\n", mcLocalB, mcAllowed),
	})
	// check-config is run in the lab's host namespace, where the daemon
	// runs: the host check reads that namespace's addresses and routes.
	if out, err := l.HostRun(ctx, binary, "check-config", "--config", cfgPath); err != nil {
		t.Fatalf("check-config refused the test's own config: %v\n%s", err, out)
	}
	d := startDaemonIn(t, l, cfgPath)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the IPv4 rules of %s:\n%s", l.HostNS, familyRules(t, l, false))
		}
	})
	admin := func(c string) *lab.Cluster { return l.Cluster(c) }

	t.Run("one ClusterIP in three clusters answers at each cluster's own local address", func(t *testing.T) {
		for _, c := range []string{"a", "b", "c"} {
			ns := namespace(t, admin(c).Admin, "multi")
			got := service(t, admin(c).Admin, ns, "web", mcPorts, func(s *corev1.Service) { s.Spec.ClusterIP = mcSameIP.String() })
			if got != mcSameIP {
				t.Fatalf("cluster %s gave the service ClusterIP %v, want %v", c, got, mcSameIP)
			}
			slice(t, admin(c).Admin, ns, "web", "1", mcPorts, []ep{readyEP(pods["m"+c].IP.String())})
		}
		// Same offset: 10.96.0.100 is 100.64.0.100 for a and 100.65.0.100
		// for b; c's ClusterIP is its own.
		answeredByIn(t, l, url(netip.MustParseAddr("100.64.0.100"), 80), 10, "ma")
		answeredByIn(t, l, url(netip.MustParseAddr("100.65.0.100"), 80), 10, "mb")
		answeredByIn(t, l, url(mcSameIP, 80), 10, "mc")

		r := statusJSON(t, sock)
		want := map[string][]status.LocalRange{
			"a": {{ServiceCIDR: mcRange.String(), LocalCIDR: mcLocalA.String()}},
			"b": {{ServiceCIDR: mcRange.String(), LocalCIDR: mcLocalB.String()}},
			"c": nil,
		}
		for name, lr := range want {
			cs := clusterIn(r, name)
			if cs == nil || fmt.Sprint(cs.LocalRanges) != fmt.Sprint(lr) {
				t.Errorf("status of cluster %s: local ranges %+v, want %+v", name, cs, lr)
			}
		}
		// The text users read says where to dial.
		text, err := l.HostRun(context.Background(), binary, "status", "--socket", sock)
		if err != nil || !strings.Contains(text, "service range 10.96.0.0/16 reached at local range 100.64.0.0/16") {
			t.Errorf("kube-outpost status: %v\n%s", err, text)
		}
		t.Logf("kube-outpost status:\n%s", text)
		ex := explainJSON(t, sock, "100.65.0.100:80")
		if len(ex.Ports) != 1 || ex.Ports[0].Cluster != "b" || ex.Ports[0].ClusterIP != mcSameIP.String() ||
			!strings.HasPrefix(ex.Ports[0].Target, "100.65.0.100:80") || len(ex.Ports[0].Mismatches) != 0 {
			t.Errorf("explain 100.65.0.100:80 = %+v, want cluster b's web with ClusterIP %v and no mismatches", ex.Ports, mcSameIP)
		}
	})

	t.Run("external IPs are captured only inside allow_external_ips", func(t *testing.T) {
		ext := func(ips ...string) func(*corev1.Service) {
			return func(s *corev1.Service) { s.Spec.ExternalIPs = ips }
		}
		// c allows none: its external IP stays out, with a warning.
		ns := namespace(t, admin("c").Admin, "ext")
		service(t, admin("c").Admin, ns, "capture", mcPorts, ext("192.0.2.9"))
		slice(t, admin("c").Admin, ns, "capture", "1", mcPorts, []ep{readyEP(pods["mc"].IP.String())})
		eventually(t, 30*time.Second, "c's external IP refused in status", func() error {
			return refusalIn(statusJSON(t, sock), "c", ns, "capture", "allow_external_ips is not set")
		})
		if rules := familyRules(t, l, false); strings.Contains(rules, "192.0.2.9") {
			t.Errorf("an external IP without allow_external_ips is in the rules:\n%s", rules)
		}

		// a allows 192.0.2.0/28: inside it answers, outside it does not.
		ns = namespace(t, admin("a").Admin, "ext")
		service(t, admin("a").Admin, ns, "lb", mcPorts, ext("192.0.2.5", "198.51.100.7"))
		slice(t, admin("a").Admin, ns, "lb", "1", mcPorts, []ep{readyEP(pods["ma"].IP.String())})
		answeredByIn(t, l, url(netip.MustParseAddr("192.0.2.5"), 80), 10, "ma")
		eventually(t, 30*time.Second, "the external IP outside the allowlist refused in status", func() error {
			return refusalIn(statusJSON(t, sock), "a", ns, "lb", "198.51.100.7")
		})
		if rules := familyRules(t, l, false); strings.Contains(rules, "198.51.100.7") {
			t.Errorf("an external IP outside allow_external_ips is in the rules:\n%s", rules)
		}
		// Without endpoints, an external IP refuses as fast as a VIP.
		service(t, admin("a").Admin, ns, "empty", mcPorts, ext("192.0.2.6"))
		eventually(t, 30*time.Second, "tcp to an external IP without endpoints refused", func() error {
			return refusedIn(l, url(netip.MustParseAddr("192.0.2.6"), 80))
		})
		ex := explainJSON(t, sock, "192.0.2.5:80")
		if len(ex.Ports) != 1 || ex.Ports[0].Service != ns+"/lb" || len(ex.Ports[0].Mismatches) != 0 {
			t.Errorf("explain 192.0.2.5:80 = %+v, want a's ext/lb without mismatches", ex.Ports)
		}

		// b allows the same range and claims the same external IP:port
		// later: a keeps it, and b's claim is a refusal naming a's service.
		nsb := namespace(t, admin("b").Admin, "ext")
		service(t, admin("b").Admin, nsb, "late", mcPorts, ext("192.0.2.5"))
		slice(t, admin("b").Admin, nsb, "late", "1", mcPorts, []ep{readyEP(pods["mb"].IP.String())})
		eventually(t, 30*time.Second, "the later claim of 192.0.2.5:80 refused", func() error {
			return refusalIn(statusJSON(t, sock), "b", nsb, "late", `conflict: external IP 192.0.2.5:80/TCP of port "http"/TCP is already programmed for cluster "a" service ext/lb`)
		})
		answeredByIn(t, l, url(netip.MustParseAddr("192.0.2.5"), 80), 10, "ma")
		// b's service itself is fine at its own VIP.
		r := statusJSON(t, sock)
		if n := d.count(`service not fully programmed.*cluster=b.*conflict`); n == 0 {
			t.Errorf("no warning logged for the conflict; status: %+v", clusterIn(r, "b"))
		}
		text, err := l.HostRun(context.Background(), binary, "status", "--socket", sock)
		if err != nil || !strings.Contains(text, "ext/late") || !strings.Contains(text, "external IPs captured on this host in 192.0.2.0/28") {
			t.Errorf("kube-outpost status does not show the conflict and the allowlist: %v\n%s", err, text)
		}
		t.Logf("kube-outpost status:\n%s", text)
		text, err = l.HostRun(context.Background(), binary, "explain", "--socket", sock, "192.0.2.5:80")
		if err != nil || !strings.Contains(text, "external IPs on this host: 192.0.2.5") {
			t.Errorf("kube-outpost explain 192.0.2.5:80: %v\n%s", err, text)
		}
		t.Logf("kube-outpost explain 192.0.2.5:80:\n%s", text)
	})

	t.Run("endpoints at this host's own address or outside endpoint_cidrs are dropped", func(t *testing.T) {
		ns := namespace(t, admin("c").Admin, "self")
		service(t, admin("c").Admin, ns, "web", mcPorts)
		slice(t, admin("c").Admin, ns, "web", "1", mcPorts, []ep{readyEP(mcHostAddr), readyEP(pods["mc"].IP.String())})
		vip := serviceVIP(t, sock, "c", ns, "web")
		answeredByIn(t, l, url(vip, 80), 20, "mc")
		eventually(t, 30*time.Second, "the host's own address dropped in status", func() error {
			return refusalIn(statusJSON(t, sock), "c", ns, "web", "endpoint 10.250.0.2 is this host's own address: dropped")
		})
		if d.count(`endpoint 10.250.0.2 is this host's own address: dropped`) == 0 {
			t.Error("no warning logged for the endpoint at the host's own address")
		}

		// b only takes endpoints in 10.244.0.0/16: the apiserver's
		// address is a real host, but not one of b's pods.
		ns = namespace(t, admin("b").Admin, "filtered")
		service(t, admin("b").Admin, ns, "web", mcPorts)
		slice(t, admin("b").Admin, ns, "web", "1", mcPorts, []ep{readyEP("10.250.0.10"), readyEP(pods["mb"].IP.String())})
		vip = serviceVIP(t, sock, "b", ns, "web")
		if !mcLocalB.Contains(vip) {
			t.Fatalf("b's service is at %v, not in its local range %v", vip, mcLocalB)
		}
		answeredByIn(t, l, url(vip, 80), 20, "mb")
		eventually(t, 30*time.Second, "the endpoint outside endpoint_cidrs dropped in status", func() error {
			return refusalIn(statusJSON(t, sock), "b", ns, "web", "endpoint 10.250.0.10 is outside endpoint_cidrs [10.244.0.0/16]: dropped")
		})
	})

	t.Run("check-config refuses overlapping local ranges and ranges with this host's addresses", func(t *testing.T) {
		overlap := mcConfig(t, l, "", map[string]string{
			"a": fmt.Sprintf("local_service_cidr = %q\n", mcLocalA),
			"b": fmt.Sprintf("local_service_cidr = %q\n", mcLocalA),
		})
		out, err := l.HostRun(context.Background(), binary, "check-config", "--config", overlap)
		if err == nil || !strings.Contains(out, `cluster "b": local_service_cidr 100.64.0.0/16 overlaps cluster "a" local_service_cidr 100.64.0.0/16`) {
			t.Errorf("check-config of two clusters with one local range: %v\n%s", err, out)
		}
		// Two clusters with the same service range and no mapping: the
		// message says how to fix it.
		same := mcConfig(t, l, "", nil)
		out, err = l.HostRun(context.Background(), binary, "check-config", "--config", same)
		if err == nil || !strings.Contains(out, "set local_service_cidr on one of them") {
			t.Errorf("check-config of three clusters with one service range: %v\n%s", err, out)
		}

		if out, err := l.HostRun(context.Background(), "ip", "addr", "add", "100.66.0.1/32", "dev", "lo"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Cleanup(func() { l.HostRun(context.Background(), "ip", "addr", "del", "100.66.0.1/32", "dev", "lo") })
		colliding := mcConfig(t, l, "", map[string]string{
			"a": fmt.Sprintf("local_service_cidr = %q\n", mcLocalA),
			"b": fmt.Sprintf("local_service_cidr = %q\n", mcLocalB),
			"c": "local_service_cidr = \"100.66.0.0/16\"\n",
		})
		out, err = l.HostRun(context.Background(), binary, "check-config", "--config", colliding)
		if err == nil || !strings.Contains(out, `cluster "c": local_service_cidr 100.66.0.0/16 collides with address 100.66.0.1 on lo`) {
			t.Errorf("check-config of a local range holding a host address: %v\n%s", err, out)
		}
		// The lab's connected network is refused too (a /30 of it, which
		// holds the host's address but not the apiserver's, which Load
		// refuses before the host is asked).
		onLink := mcConfigRange(t, l, "10.96.0.0/30", "10.250.0.0/30")
		out, err = l.HostRun(context.Background(), binary, "check-config", "--config", onLink)
		if err == nil || !strings.Contains(out, "collides with address 10.250.0.2") || !strings.Contains(out, "connected route 10.250.0.0/24") {
			t.Errorf("check-config of a local range on the host's own network: %v\n%s", err, out)
		}
	})
}

// mcConfig writes a config for the three clusters of l with the extra keys
// given per cluster, and returns its path. sock "" turns the status socket
// off.
func mcConfig(t *testing.T, l *lab.Lab, sock string, extra map[string]string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "mode = %q\nmin_sync_period = \"200ms\"\nmetrics_address = \"\"\nhealthz_address = \"\"\nstatus_socket = %q\n", mode, sock)
	for _, c := range []string{"a", "b", "c"} {
		fmt.Fprintf(&b, "\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n%s", c, l.Cluster(c).Kubeconfig, mcRange.String(), extra[c])
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mcConfigRange writes a config with one cluster whose service range
// serviceCIDR is mapped to local.
func mcConfigRange(t *testing.T, l *lab.Lab, serviceCIDR, local string) string {
	t.Helper()
	cfg := fmt.Sprintf("mode = %q\nstatus_socket = \"\"\n\n[[clusters]]\nname = \"a\"\nkubeconfig = %q\nservice_cidrs = [%q]\nlocal_service_cidr = %q\n",
		mode, l.Cluster("a").Kubeconfig, serviceCIDR, local)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// refusalIn says whether status lists a refusal of ns/name in cluster
// with reason containing want.
func refusalIn(r status.Report, cluster, ns, name, want string) error {
	cs := clusterIn(r, cluster)
	if cs == nil {
		return fmt.Errorf("no cluster %q in status", cluster)
	}
	if !hasRefusal(cs.Refused, ns, name, want) {
		return fmt.Errorf("cluster %q refuses %+v, want %s/%s with %q", cluster, cs.Refused, ns, name, want)
	}
	return nil
}

// serviceVIP is where this host reaches a service, as explain says once
// the daemon has it.
func serviceVIP(t *testing.T, sock, cluster, ns, name string) netip.Addr {
	t.Helper()
	var vip netip.Addr
	eventually(t, 30*time.Second, "explain "+cluster+"/"+ns+"/"+name, func() error {
		ex, err := explain(sock, cluster+"/"+ns+"/"+name)
		if err != nil {
			return err
		}
		target, _, _ := strings.Cut(ex.Ports[0].Target, "/")
		ap, err := netip.ParseAddrPort(target)
		if err != nil {
			return err
		}
		vip = ap.Addr()
		return nil
	})
	return vip
}
