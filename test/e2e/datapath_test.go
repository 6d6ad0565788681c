//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var (
	web = []port{
		{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, byName: true},
		{name: "metrics", proto: corev1.ProtocolTCP, port: 9100, target: 9090},
	}
	dns = []port{{name: "dns", proto: corev1.ProtocolUDP, port: 53, target: 5353}}
)

func ip(pod string) string { return pods[pod].IP.String() }

// TestDatapath runs one daemon for both clusters and checks each behaviour
// with real connections from the outside host.
func TestDatapath(t *testing.T) {
	alpha, beta := theLab.Cluster("alpha").Admin, theLab.Cluster("beta").Admin
	d := startDaemon(t, writeConfig(t))

	t.Run("tcp balances over every endpoint, named and multiple ports", func(t *testing.T) {
		ns := namespace(t, alpha, "tcp")
		vip := service(t, alpha, ns, "web", web)
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2")), readyEP(ip("a3"))})
		answeredBy(t, url(vip, 80), 60, "a1", "a2", "a3")
		answeredBy(t, url(vip, 9100), 60, "a1", "a2", "a3")
		programmedByMode(t, vip, 80, ip("a1")+":8080", ip("a2")+":8080", ip("a3")+":8080")
	})

	t.Run("udp balances over every endpoint", func(t *testing.T) {
		ns := namespace(t, alpha, "udp")
		vip := service(t, alpha, ns, "dns", dns)
		slice(t, alpha, ns, "dns", "1", dns, []ep{readyEP(ip("a1")), readyEP(ip("a2"))})
		addr := netip.AddrPortFrom(vip, 53).String()
		eventually(t, 20*time.Second, "udp answers", func() error {
			got := map[string]int{}
			for i := 0; i < 40; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				body, err := theLab.UDPRequest(ctx, addr, "ping")
				cancel()
				if err != nil {
					return err
				}
				got[body]++
			}
			if got["a1"] == 0 || got["a2"] == 0 || len(got) != 2 {
				return fmt.Errorf("answers %v, want a1 and a2", got)
			}
			return nil
		})
	})

	t.Run("a udp flow moves off a removed endpoint", testStaleUDPFlows)

	t.Run("client ip affinity sticks", func(t *testing.T) {
		needs(t, config.CanAffinity)
		ns := namespace(t, alpha, "affinity")
		vip := service(t, alpha, ns, "web", web, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		})
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2")), readyEP(ip("a3"))})
		eventually(t, 20*time.Second, "service answers", func() error { _, err := get(url(vip, 80)); return err })
		got := hits(t, url(vip, 80), 30)
		if len(got) != 1 {
			t.Fatalf("with ClientIP affinity 30 requests went to %v, want one pod", got)
		}
	})

	t.Run("service without endpoints is refused, not black-holed", func(t *testing.T) {
		needs(t, config.CanReject)
		ns := namespace(t, alpha, "empty")
		vip := service(t, alpha, ns, "web", web)
		udpVIP := service(t, alpha, ns, "dns", dns)
		eventually(t, 20*time.Second, "tcp refused", func() error { return refused(url(vip, 80)) })
		eventually(t, 20*time.Second, "udp refused", func() error { return udpRefused(netip.AddrPortFrom(udpVIP, 53).String()) })
		// Endpoints that are not ready count as none.
		slice(t, alpha, ns, "web", "1", web, []ep{{ip: ip("a1")}})
		time.Sleep(time.Second)
		if err := refused(url(vip, 80)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("endpoint changes are followed, terminating endpoints are the fallback", func(t *testing.T) {
		ns := namespace(t, alpha, "scale")
		vip := service(t, alpha, ns, "web", web)
		u := url(vip, 80)
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
		answeredBy(t, u, 10, "a1")
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2"))})
		answeredBy(t, u, 40, "a1", "a2")
		// A second slice adds a third endpoint.
		slice(t, alpha, ns, "web", "2", web, []ep{readyEP(ip("a3"))})
		answeredBy(t, u, 60, "a1", "a2", "a3")
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a2"))})
		answeredBy(t, u, 40, "a2", "a3")
		// a3 terminates while a2 is ready: only a2.
		slice(t, alpha, ns, "web", "2", web, []ep{{ip: ip("a3"), serving: true, terminating: true}})
		answeredBy(t, u, 30, "a2")
		// No ready endpoint left: the serving, terminating one takes over.
		slice(t, alpha, ns, "web", "1", web, nil)
		answeredBy(t, u, 10, "a3")
		// It stops serving: refused.
		slice(t, alpha, ns, "web", "2", web, []ep{{ip: ip("a3"), terminating: true}})
		eventually(t, 20*time.Second, "refused once nothing serves", func() error { return refused(u) })
	})

	t.Run("deleting a service removes its rules", func(t *testing.T) {
		ns := namespace(t, alpha, "delete")
		vip := service(t, alpha, ns, "web", web)
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
		answeredBy(t, url(vip, 80), 5, "a1")
		if !mentions(kernelState(t), vip) {
			t.Fatalf("%s (alpha/delete/web) not found in the kernel's state", vip)
		}
		if err := alpha.CoreV1().Services(ns).Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "rules removed", func() error {
			if s := kernelState(t); mentions(s, vip) || strings.Contains(s, "alpha/delete/web") {
				return fmt.Errorf("the kernel's state still has alpha/delete/web (%s)", vip)
			}
			return nil
		})
		if _, err := get(url(vip, 80)); err == nil {
			t.Fatal("the deleted service still answers")
		}
	})

	t.Run("two clusters at once", func(t *testing.T) {
		nsA, nsB := namespace(t, alpha, "both"), namespace(t, beta, "both")
		vipA := service(t, alpha, nsA, "web", web)
		vipB := service(t, beta, nsB, "web", web)
		slice(t, alpha, nsA, "web", "1", web, []ep{readyEP(ip("a1"))})
		slice(t, beta, nsB, "web", "1", web, []ep{readyEP(ip("b1")), readyEP(ip("b2"))})
		answeredBy(t, url(vipA, 80), 10, "a1")
		answeredBy(t, url(vipB, 80), 30, "b1", "b2")
	})

	t.Run("hostile and odd objects are refused", func(t *testing.T) {
		ns := namespace(t, alpha, "hostile")
		// The apiserver itself refuses loopback, link-local and metadata
		// endpoint addresses (the unit tests cover them); a multicast one
		// gets through it and must be dropped here. The good one stays.
		vip := service(t, alpha, ns, "web", web)
		slice(t, alpha, ns, "web", "1", web, []ep{readyEP("224.1.1.1"), readyEP(ip("a2"))})
		answeredBy(t, url(vip, 80), 20, "a2")
		// Only unsafe endpoints: refused, never DNATed.
		bad := service(t, alpha, ns, "bad", web)
		slice(t, alpha, ns, "bad", "1", web, []ep{readyEP("224.1.1.1")})
		eventually(t, 20*time.Second, "unsafe-only service refused", func() error { return refused(url(bad, 80)) })
		// externalIPs are not programmed; the ClusterIP still is.
		ext := service(t, alpha, ns, "ext", web, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.7"} })
		slice(t, alpha, ns, "ext", "1", web, []ep{readyEP(ip("a3"))})
		answeredBy(t, url(ext, 80), 5, "a3")
		eventually(t, 10*time.Second, "warnings logged", func() error {
			for _, re := range []string{`hostile/web.*224\.1\.1\.1 is a multicast`, `hostile/ext.*externalIPs`} {
				if d.count(re) == 0 {
					return fmt.Errorf("no log line matches %q", re)
				}
			}
			return nil
		})
		state := kernelState(t)
		for _, s := range []string{"224.1.1.1", "203.0.113.7"} {
			if mentions(state, netip.MustParseAddr(s)) {
				t.Errorf("the kernel's state mentions %s, which must never be programmed", s)
			}
		}
	})

	t.Run("headless and ExternalName services are ignored", func(t *testing.T) {
		ns := namespace(t, alpha, "ignored")
		// Their endpoint is x1, which nothing else uses: if it shows up in
		// the kernel, one of them was programmed.
		service(t, alpha, ns, "headless", web, func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone })
		slice(t, alpha, ns, "headless", "1", web, []ep{readyEP(ip("x1"))})
		_, err := alpha.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "ext"},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.invalid"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		slice(t, alpha, ns, "ext", "1", web, []ep{readyEP(ip("x1"))})
		// A marker service created after them: once it is programmed, the
		// others have been seen too.
		marker := service(t, alpha, ns, "marker", web)
		slice(t, alpha, ns, "marker", "1", web, []ep{readyEP(ip("a1"))})
		answeredBy(t, url(marker, 80), 3, "a1")
		state := kernelState(t)
		if mentions(state, pods["x1"].IP) || strings.Contains(state, "alpha/ignored/headless") || strings.Contains(state, "alpha/ignored/ext") {
			t.Fatalf("headless or ExternalName service programmed:\n%s", state)
		}
	})

	t.Run("a burst of changes is coalesced", func(t *testing.T) {
		ns := namespace(t, alpha, "burst")
		before := d.count(`msg=synced`)
		var vips []netip.Addr
		for i := 0; i < 100; i++ {
			vips = append(vips, service(t, alpha, ns, fmt.Sprintf("s%d", i), web))
		}
		eventually(t, 30*time.Second, "100 services programmed", func() error {
			state, n := kernelState(t), 0
			for _, v := range vips {
				if mentions(state, v) {
					n++
				}
			}
			if n < len(vips) {
				return fmt.Errorf("%d of %d services programmed", n, len(vips))
			}
			return nil
		})
		syncs := d.count(`msg=synced`) - before
		t.Logf("100 service creations took %d syncs", syncs)
		if syncs >= 50 {
			t.Fatalf("100 service creations took %d syncs: changes are not coalesced", syncs)
		}
	})
}

// refused checks that a TCP connection is actively refused (RST or ICMP),
// not timed out.
func refused(u string) error {
	_, err := get(u)
	if err == nil {
		return errors.New("the service answered")
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("want connection refused, got %v", err)
}

func udpRefused(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := theLab.UDPRequest(ctx, addr, "ping")
	if err == nil {
		return errors.New("the service answered")
	}
	// REJECT in OUTPUT fails the send itself (EPERM) for a local client; a
	// routed one gets the ICMP port unreachable (ECONNREFUSED).
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPERM) {
		return nil
	}
	return fmt.Errorf("want an immediate refusal, got %v", err)
}

func udpOnce(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return theLab.UDPRequest(ctx, addr, "ping")
}
