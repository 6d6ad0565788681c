//go:build e2e && linux

package lab_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// TestLabIPv6 starts a lab with a dual-stack cluster and checks the IPv6
// addressing next to the IPv4 one, with real packets.
func TestLabIPv6(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	if !lab.KernelHasIPv6() {
		t.Skip("this kernel has no IPv6")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	for _, bad := range []lab.ClusterOptions{
		{Name: "v4", ServiceCIDR: mustPrefix("10.96.0.0/16"), ServiceCIDRv6: mustPrefix("10.95.0.0/16")},
		{Name: "pods", ServiceCIDR: mustPrefix("10.96.0.0/16"), ServiceCIDRv6: mustPrefix("fd00:244::/108")},
		{Name: "big", ServiceCIDR: mustPrefix("10.96.0.0/16"), ServiceCIDRv6: mustPrefix("fd00:96::/48")},
	} {
		if l, err := lab.Start(ctx, lab.Options{Clusters: []lab.ClusterOptions{bad}}); err == nil {
			l.Close()
			t.Errorf("Start with ServiceCIDRv6 %v succeeded", bad.ServiceCIDRv6)
		}
	}

	v6Range := mustPrefix("fd00:96::/108")
	l, err := lab.Start(ctx, lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "dual", ServiceCIDR: mustPrefix("10.96.0.0/16"), ServiceCIDRv6: v6Range}},
		Log:      testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	dual := l.Cluster("dual")
	if l.HostIPv6 != netip.MustParseAddr("fd00:250::2") || dual.ServiceCIDRv6 != v6Range {
		t.Fatalf("HostIPv6 %v, cluster ServiceCIDRv6 %v", l.HostIPv6, dual.ServiceCIDRv6)
	}

	t.Run("topology", func(t *testing.T) {
		for _, ns := range labNetns(t, l.ID) {
			for _, family := range []string{"-4", "-6"} {
				out, err := exec.Command("ip", family, "-n", ns, "route", "show", "default").CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != "" {
					t.Errorf("netns %s: %s default route %q (err %v); the lab must have none", ns, family, out, err)
				}
			}
			// nodad / accept_dad=0: nothing may wait for duplicate
			// address detection.
			out, err := exec.Command("ip", "-6", "-n", ns, "addr", "show", "tentative").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("netns %s: tentative addresses %q (err %v)", ns, out, err)
			}
		}
		routes, err := l.HostRun(ctx, "ip", "-6", "route")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"fd00:244::/64 via fd00:250::1", "fd00:96::/108 via fd00:250::1", "fd00:250::/64 dev eth0"} {
			if !strings.Contains(routes, want) {
				t.Errorf("host IPv6 routes lack %q:\n%s", want, routes)
			}
		}
		for ns, want := range map[string]string{l.ID + "-router": "1", l.HostNS: "0"} {
			out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != want {
				t.Errorf("netns %s: net.ipv6.conf.all.forwarding = %q (err %v), want %s", ns, out, err, want)
			}
		}
	})

	pods := map[string]*lab.Pod{}
	for _, name := range []string{"six-1", "six-2"} {
		p, err := l.AddPod(ctx, name, []int{8080}, []int{5353})
		if err != nil {
			t.Fatal(err)
		}
		pods[name] = p
	}

	t.Run("pods", func(t *testing.T) {
		for name, p := range pods {
			a4 := p.IP.As4()
			want := netip.AddrFrom16([16]byte{0xfd, 0, 0x02, 0x44, 13: a4[2], 15: a4[3]})
			if p.IPv6 != want {
				t.Errorf("pod %s: IPv6 %v, want %v (for %v)", name, p.IPv6, want, p.IP)
			}
			for _, ip := range []netip.Addr{p.IP, p.IPv6} {
				url := "http://" + netip.AddrPortFrom(ip, 8080).String() + "/anything"
				body, hdr, err := l.HTTPGetHeader(ctx, url)
				if err != nil || body != name {
					t.Errorf("HTTPGet %s = %q, %v; want %q", url, body, err, name)
					continue
				}
				src := l.HostIP
				if ip.Is6() {
					src = l.HostIPv6
				}
				// Plain routing, no NAT: the pod sees the host's own address.
				if got, err := netip.ParseAddrPort(hdr.Get("X-Remote-Addr")); err != nil || got.Addr() != src {
					t.Errorf("%s: pod saw the client as %q (%v), want %v", url, hdr.Get("X-Remote-Addr"), err, src)
				}
				addr := netip.AddrPortFrom(ip, 5353).String()
				if got, err := l.UDPRequest(ctx, addr, "ping"); err != nil || got != name {
					t.Errorf("UDPRequest %s = %q, %v; want %q", addr, got, err, name)
				}
				conn, err := l.DialHost(ctx, "tcp", netip.AddrPortFrom(ip, 8080).String())
				if err != nil {
					t.Errorf("DialHost %v: %v", ip, err)
				} else {
					conn.Close()
				}
			}
			// A real process in the host namespace reaches the pod over IPv6.
			out, err := l.HostRun(ctx, "curl", "-sS", "-g", "--max-time", "10", "http://"+netip.AddrPortFrom(p.IPv6, 8080).String()+"/")
			if err != nil || strings.TrimSpace(out) != name {
				t.Errorf("curl over IPv6 from the host: %q, %v", out, err)
			}
		}
	})

	t.Run("dual-stack-apiserver", func(t *testing.T) {
		svc, err := dual.Admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "both"},
			Spec: corev1.ServiceSpec{
				Ports:          []corev1.ServicePort{{Port: 80}},
				IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
				IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.ClusterIPs) != 2 {
			t.Fatalf("ClusterIPs %v, want two", svc.Spec.ClusterIPs)
		}
		if v4, v6 := mustAddr(t, svc.Spec.ClusterIPs[0]), mustAddr(t, svc.Spec.ClusterIPs[1]); !dual.ServiceCIDR.Contains(v4) || !v6Range.Contains(v6) {
			t.Errorf("ClusterIPs %v, want one from %v and one from %v", svc.Spec.ClusterIPs, dual.ServiceCIDR, v6Range)
		}
	})

	t.Run("routed-client", func(t *testing.T) {
		c, err := l.AddRoutedClient(ctx, "legacy6")
		if err != nil {
			t.Fatal(err)
		}
		if !c.IPv6.IsValid() || !netip.PrefixFrom(c.GatewayIPv6, 64).Masked().Contains(c.IPv6) || !strings.HasPrefix(c.IPv6.String(), "fd00:251:") {
			t.Errorf("client %v, gateway %v", c.IPv6, c.GatewayIPv6)
		}
		out, err := exec.Command("ip", "-6", "-n", c.NS, "route").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, p := range []string{"fd00:96::/108", "fd00:244::/64"} {
			if want := p + " via " + c.GatewayIPv6.String(); !strings.Contains(string(out), want) {
				t.Errorf("client IPv6 routes lack %q:\n%s", want, out)
			}
		}
		if fwd, err := l.HostRun(ctx, "sysctl", "-n", "net.ipv6.conf.all.forwarding"); err != nil || strings.TrimSpace(fwd) != "1" {
			t.Errorf("host IPv6 forwarding = %q, %v; want 1 once a routed client exists", fwd, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	})

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := labNetns(t, l.ID); len(left) > 0 {
		t.Errorf("netns left after Close: %v", left)
	}
}
