//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// TestRoutedClient: the host is the router of another machine that is not
// in the clusters, and routed_clients lists it. That machine's packets to
// ClusterIPs enter through PREROUTING, are DNATed there and masqueraded to
// the host's address (the pods have no route back to the machine), and
// services without endpoints are refused in FORWARD (in ipvs mode: served
// and refused in INPUT). A second machine routed the same way but not in
// routed_clients reaches no ClusterIP.
func TestRoutedClient(t *testing.T) {
	needs(t, config.CanRoutedClients)
	alpha := theLab.Cluster("alpha").Admin
	client := routedClient(t, "routed")
	stranger := routedClient(t, "stranger")
	startDaemon(t, routedConfig(t, writeConfig(t), netip.PrefixFrom(client.IP, 32)))

	ns := namespace(t, alpha, "routed")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2"))})
	udpVIP := service(t, alpha, ns, "dns", dns)
	slice(t, alpha, ns, "dns", "1", dns, []ep{readyEP(ip("a1")), readyEP(ip("a2"))})
	emptyVIP := service(t, alpha, ns, "empty", web)
	emptyUDPVIP := service(t, alpha, ns, "emptydns", dns)

	t.Run("tcp is proxied and masqueraded to the host's address", func(t *testing.T) {
		u := url(vip, 80)
		wantSrc := theLab.HostIP.String()
		eventually(t, 20*time.Second, "answers from a1 and a2 at "+u, func() error {
			return masqueradedBy(client, u, 40, wantSrc, "a1", "a2")
		})
	})

	t.Run("udp is proxied", func(t *testing.T) {
		addr := netip.AddrPortFrom(udpVIP, 53).String()
		eventually(t, 20*time.Second, "udp answers from a1 and a2", func() error {
			got := map[string]int{}
			for i := 0; i < 40; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				body, err := client.UDPRequest(ctx, addr, "ping")
				cancel()
				if err != nil {
					return err
				}
				got[body]++
			}
			if got["a1"] == 0 || got["a2"] == 0 || len(got) != 2 {
				return fmt.Errorf("answers %v, want a1 and a2 only", got)
			}
			return nil
		})
	})

	t.Run("services without endpoints are refused", func(t *testing.T) {
		eventually(t, 20*time.Second, "tcp refused", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return routedRefused(client.HTTPGet(ctx, url(emptyVIP, 80)))
		})
		eventually(t, 20*time.Second, "udp refused", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return routedRefused(client.UDPRequest(ctx, netip.AddrPortFrom(emptyUDPVIP, 53).String(), "ping"))
		})
		// The refusal comes from this host, not from somewhere further on.
		refusedHere(t, ns+"/empty", emptyVIP)
	})

	t.Run("a routed client outside routed_clients reaches no ClusterIP", func(t *testing.T) {
		// The listed client is served by now (the first subtests): the
		// rules are in place, and still nothing answers the other one.
		for i := 0; i < 3; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			body, err := stranger.HTTPGet(ctx, url(vip, 80))
			cancel()
			if err == nil {
				t.Fatalf("%s (not in routed_clients) got an answer from %q at %s", stranger.IP, body, url(vip, 80))
			}
			ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
			body, err = stranger.UDPRequest(ctx, netip.AddrPortFrom(udpVIP, 53).String(), "ping")
			cancel()
			if err == nil {
				t.Fatalf("%s (not in routed_clients) got a UDP answer from %q", stranger.IP, body)
			}
		}
		// Not a broken network: the listed client is still served.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if body, err := client.HTTPGet(ctx, url(vip, 80)); err != nil || (body != "a1" && body != "a2") {
			t.Fatalf("the client in routed_clients is no longer served either: %q, %v", body, err)
		}
	})

	t.Run("a udp flow moves off a removed endpoint", func(t *testing.T) {
		slice(t, alpha, ns, "dns", "1", dns, []ep{readyEP(ip("a1"))})
		addr := netip.AddrPortFrom(udpVIP, 53).String()
		eventually(t, 20*time.Second, "udp answered by a1 alone", func() error {
			for range 5 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				got, err := client.UDPRequest(ctx, addr, "ping")
				cancel()
				if err != nil || got != "a1" {
					return fmt.Errorf("answered by %q: %v", got, err)
				}
			}
			return nil
		})
		took := moves(t, alpha, client.Dial, ns, "dns", addr, 4, "a1", "a2")
		t.Logf("a udp flow from a routed client moved to the new endpoint after %v: %s", took, p50max(took))
	})
}

// routedClient adds a routed client to the lab for the test's duration.
func routedClient(t *testing.T, name string) *lab.Client {
	t.Helper()
	c, err := theLab.AddRoutedClient(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("removing the routed client %s: %v", name, err)
		}
	})
	return c
}

// routedConfig returns a copy of the config at path with routed_clients set
// to ranges.
func routedConfig(t *testing.T, path string, ranges ...netip.Prefix) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	q := make([]string, len(ranges))
	for i, r := range ranges {
		q[i] = strconv.Quote(r.String())
	}
	// Top-level keys go before the first [[clusters]]: first line it is.
	text := fmt.Sprintf("routed_clients = [%s]\n", strings.Join(q, ", ")) + string(data)
	out := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(out, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// routedRefused checks that a request from a routed client was actively
// refused: a TCP reset, or an ICMP port unreachable on a connected UDP
// socket, both ECONNREFUSED. (EPERM would only be a local sender's.)
func routedRefused(body string, err error) error {
	if err == nil {
		return fmt.Errorf("the service answered %q", body)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("want connection refused, got %v", err)
}

// masqueradedBy sends n requests from a routed client to u and checks that
// exactly the pods want answer, each seeing the request come from wantSrc
// (the host's address: masqueraded).
func masqueradedBy(client *lab.Client, u string, n int, wantSrc string, want ...string) error {
	got := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		body, hdr, err := client.HTTPGetHeader(ctx, u)
		cancel()
		if err != nil {
			return err
		}
		src, err := netip.ParseAddrPort(hdr.Get("X-Remote-Addr"))
		if err != nil {
			return fmt.Errorf("X-Remote-Addr %q: %v", hdr.Get("X-Remote-Addr"), err)
		}
		if src.Addr().String() != wantSrc {
			return fmt.Errorf("pod %s saw the request from %v, want the host's %s (masqueraded)", body, src, wantSrc)
		}
		got[body]++
	}
	if len(got) != len(want) {
		return fmt.Errorf("answers %v, want %v only", got, want)
	}
	for _, p := range want {
		if got[p] == 0 {
			return fmt.Errorf("answers %v, want %v only", got, want)
		}
	}
	return nil
}
