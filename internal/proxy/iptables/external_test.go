package iptables

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// extState is a cluster mapped to a local range, with an external IP on a
// port with endpoints and one on a port without.
func extState(webExt ...string) *model.State {
	web := modeltest.Svc("a", "ns", "web", "", model.TCP, "10.96.0.10", 80, "10.244.0.5:8080")
	web.LocalIP = netip.MustParseAddr("100.64.0.10")
	for _, e := range webExt {
		web.ExternalIPs = append(web.ExternalIPs, netip.MustParseAddr(e))
	}
	empty := modeltest.Svc("a", "ns", "empty", "", model.TCP, "10.96.0.11", 80)
	empty.LocalIP = netip.MustParseAddr("100.64.0.11")
	empty.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.6")}
	c := modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, web, empty)
	c.LocalServiceCIDR = netip.MustParsePrefix("100.64.0.0/16")
	c.AllowExternalIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	return modeltest.State(c)
}

// TestExternalIPsAndLocalRange: packets to the local VIP and to allowed
// external IPs reach the endpoints, or are refused when there are none;
// the real ClusterIP, mapped away, is left alone.
func TestExternalIPsAndLocalRange(t *testing.T) {
	f := NewFake()
	p := newProxier(f, false, 0x100000)
	mustSync(t, p, extState("192.0.2.5"), true)
	dnat := []outcome{{DNAT: "10.244.0.5:8080", Masq: true, P: 1}}
	reject := []outcome{{Reject: "tcp-reset", P: 1}}
	runFlows(t, f, []flowCase{
		{name: "local VIP", pkt: tcp("100.64.0.10", 80), want: dnat},
		{name: "external IP", pkt: tcp("192.0.2.5", 80), want: dnat},
		{name: "external IP without endpoints", pkt: tcp("192.0.2.6", 80), want: reject},
		{name: "local VIP without endpoints", pkt: tcp("100.64.0.11", 80), want: reject},
		{name: "the mapped ClusterIP itself", pkt: tcp("10.96.0.10", 80), want: []outcome{{P: 1}}},
		{name: "an external IP of no service", pkt: tcp("192.0.2.7", 80), want: []outcome{{P: 1}}},
	})
	if d := f.Dump(); !strings.Contains(d, "-A OUTPOST-SERVICES -d 192.0.2.0/24") || strings.Contains(d, "-d 10.96.0.0/16") {
		t.Errorf("OUTPOST-SERVICES should dispatch the allowed range and the local range, not the mapped one:\n%s", d)
	}

	// Partial syncs: a second external IP, then none, then the allowlist
	// gone: each time the same rules as a full sync of that state.
	for _, st := range []*model.State{extState("192.0.2.5", "192.0.2.8"), extState()} {
		mustSync(t, p, st, false)
		checkSameAsFull(t, f, st, false, 0x100000)
	}
	st := extState()
	st.Clusters[0].AllowExternalIPs = nil
	for _, sp := range st.Clusters[0].Ports {
		sp.ExternalIPs = nil
	}
	mustSync(t, p, st, false)
	runFlows(t, f, []flowCase{{name: "external IP after the allowlist went", pkt: tcp("192.0.2.6", 80), want: []outcome{{P: 1}}}})
	mustSync(t, p, st, true)
	checkSameAsFull(t, f, st, false, 0x100000)
}
