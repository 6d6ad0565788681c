package iptables

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// Sources of routed packets outside testRouted.
const (
	strangerIP = "203.0.113.9"
	stranger6  = "2001:db8:99::9"
)

func fromStranger(proto, dst string, port uint16) packet {
	p := fromRemote(proto, dst, port)
	p.src = strangerIP
	if strings.Contains(dst, ":") {
		p.src = stranger6
	}
	return p
}

// TestRoutedClientFlows: a routed client inside routed_clients is served
// as a local process is (DNATed and masqueraded, refused without
// endpoints); one outside is neither DNATed nor refused by us, yet node
// ports answer it; local processes are served as before.
func TestRoutedClientFlows(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			f := NewFake()
			mustSync(t, newProxier(f, v6, testMark), npState(), true)
			host, vip, empty := hostIP, "10.96.0.10", "10.96.0.14"
			web := shares(true, "10.0.1.1:8080", "10.0.1.2:8080")
			if v6 {
				host, vip, empty = hostIP6, "fd00:96::10", "fd00:96::14"
				web = shares(true, "[fd00:1::1]:8080")
			}
			for _, c := range []flowCase{
				{"routed client in routed_clients, ClusterIP", fromRemote("tcp", vip, 80), web},
				{"routed client in routed_clients, no endpoints", fromRemote("tcp", empty, 80), rejected("tcp-reset")},
				{"routed client in routed_clients, node port", fromRemote("tcp", host, 30080), web},
				{"stranger, ClusterIP", fromStranger("tcp", vip, 80), untouched},
				{"stranger, no endpoints", fromStranger("tcp", empty, 80), untouched},
				{"stranger, node port", fromStranger("tcp", host, 30080), web},
				{"stranger, node port without endpoints", fromStranger("tcp", host, 30081), rejected("tcp-reset")},
				{"stranger, a port that is no node port", fromStranger("tcp", host, 30099), untouched},
				{"local process, ClusterIP", tcp(vip, 80), web},
				{"local process, no endpoints", tcp(empty, 80), rejected("tcp-reset")},
			} {
				t.Run(c.name, func(t *testing.T) { checkFlow(t, f, c.pkt, c.want) })
			}
			checkFamily(t, f, v6)
		})
	}
}

// TestNoRoutedClients: without routed_clients (the default), routed
// packets reach no ClusterIP, from anywhere, and are not refused by us;
// node ports and local processes are served.
func TestNoRoutedClients(t *testing.T) {
	f := NewFake()
	mustSync(t, New(Options{Runner: f, MasqueradeMark: testMark}), npState(), true)
	web := shares(true, "10.0.1.1:8080", "10.0.1.2:8080")
	for _, c := range []flowCase{
		{"routed, ClusterIP", fromRemote("tcp", "10.96.0.10", 80), untouched},
		{"routed, no endpoints", fromRemote("udp", "10.96.0.14", 53), untouched},
		{"routed, node port", fromRemote("tcp", hostIP, 30080), web},
		{"routed, node port without endpoints", fromRemote("tcp", hostIP, 30081), rejected("tcp-reset")},
		{"local process, ClusterIP", tcp("10.96.0.10", 80), web},
		{"local process, no endpoints", udp("10.96.0.14", 53), rejected("icmp-port-unreachable")},
	} {
		t.Run(c.name, func(t *testing.T) { checkFlow(t, f, c.pkt, c.want) })
	}
	if r := f.Rules("filter", chainForward); len(r) != 0 {
		t.Errorf("%s without routed_clients: %q, want no rule", chainForward, r)
	}
	// Only node ports, which do not send anyone into OUTPOST-SERVICES.
	for _, r := range f.Rules("nat", chainRouted) {
		if !strings.Contains(r, "--dst-type LOCAL") || strings.Contains(r, chainServices) {
			t.Errorf("%s without routed_clients has %q, want node port rules only", chainRouted, r)
		}
	}
}

// TestRoutedClientsOfTheOtherFamily: an IPv4 Proxier ignores IPv6 ranges
// (and the reverse), so a list of one family serves none of the other.
func TestRoutedClientsOfTheOtherFamily(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f := NewFake()
		other := []netip.Prefix{netip.MustParsePrefix("fd00:ffff::/120")}
		pkt := fromRemote("tcp", "10.96.0.10", 80)
		if v6 {
			other = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}
			pkt = fromRemote("tcp", "fd00:96::10", 80)
		}
		mustSync(t, New(Options{Runner: f, IPv6: v6, MasqueradeMark: testMark, RoutedClients: other}), testState(), true)
		checkFlow(t, f, pkt, untouched)
		checkFamily(t, f, v6)
	}
}

// TestRoutedHookUpgrade: the hooks of a version that served every routed
// client (nat PREROUTING and filter FORWARD straight into the top chains)
// go at the first full sync, in favour of ours; a changed routed_clients
// applies at the next start.
func TestRoutedHookUpgrade(t *testing.T) {
	f := NewFake()
	mustSync(t, newProxier(f, false, testMark), testState(), true)
	mustRestore(t, f, `*nat
-I PREROUTING 1 -m comment --comment "kube-outpost: service portals for routed traffic" -j OUTPOST-SERVICES
COMMIT
*filter
-I FORWARD 1 -m comment --comment "kube-outpost: reject services without endpoints" -j OUTPOST-FILTER
COMMIT
`)
	checkFlow(t, f, fromStranger("tcp", "10.96.0.10", 80), shares(true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"))

	elsewhere := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	mustSync(t, New(Options{Runner: f, MasqueradeMark: testMark, RoutedClients: elsewhere}), testState(), true)
	for _, h := range []struct{ table, chain, target string }{{"nat", "PREROUTING", chainRouted}, {"filter", "FORWARD", chainForward}} {
		if r := f.Rules(h.table, h.chain); len(r) != 1 || !strings.HasSuffix(r[0], "-j "+h.target) {
			t.Errorf("%s %s: %q, want one hook into %s", h.table, h.chain, r, h.target)
		}
	}
	checkFlow(t, f, fromRemote("tcp", "10.96.0.10", 80), untouched)
	checkFlow(t, f, fromRemote("tcp", "10.96.0.14", 80), untouched)
	checkFlow(t, f, fromStranger("tcp", "10.96.0.10", 80), shares(true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"))
	checkFlow(t, f, fromStranger("tcp", "10.96.0.14", 80), rejected("tcp-reset"))

	// Cleanup leaves nothing of ours, the new chains included.
	if err := New(Options{Runner: f}).Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := f.Dump(); strings.Contains(d, chainPrefix) {
		t.Errorf("left after cleanup:\n%s", d)
	}
}

// TestRoutedClientsIncremental: partial syncs keep OUTPOST-PREROUTING's
// node port rules in line with a full sync, as node ports come and go.
func TestRoutedClientsIncremental(t *testing.T) {
	f := NewFake()
	p := newProxier(f, false, testMark)
	mustSync(t, p, testState(), true)
	mustSync(t, p, npState(), false)
	checkSameAsFull(t, f, npState(), false, testMark)
	checkFlow(t, f, fromStranger("tcp", hostIP, 30080), shares(true, "10.0.1.1:8080", "10.0.1.2:8080"))
	mustSync(t, p, testState(), false)
	checkSameAsFull(t, f, testState(), false, testMark)
	checkFlow(t, f, fromStranger("tcp", hostIP, 30080), untouched)
}
