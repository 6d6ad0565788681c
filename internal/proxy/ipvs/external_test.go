package ipvs

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestExternalIPsAndLocalRange: a mapped port is a virtual server at its
// local VIP, and each external IP is one more, bound to outpost0 like a
// VIP: this host then takes the packets to it. Without endpoints the
// external IP is bound and refused, as a VIP is.
func TestExternalIPsAndLocalRange(t *testing.T) {
	e := newEnv(t)
	web := svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080")
	web.LocalIP = netip.MustParseAddr("100.64.0.10")
	web.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.5")}
	none := svc("alpha", "default", "none", "", model.TCP, "10.96.0.11", 80)
	none.LocalIP = netip.MustParseAddr("100.64.0.11")
	none.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.6")}
	c := cluster("alpha", true, []string{"10.96.0.0/16"}, web, none)
	c.LocalServiceCIDR = netip.MustParsePrefix("100.64.0.0/16")
	c.AllowExternalIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	e.sync(state(c), false)
	e.wantSet("OUTPOST-IPVS-VIPS", "100.64.0.10", "100.64.0.11", "192.0.2.5", "192.0.2.6")
	e.wantSet("OUTPOST-IPVS-PORTS", "100.64.0.10,tcp:80", "192.0.2.5,tcp:80")
	dump := e.k.Dump()
	for _, want := range []string{"addr 192.0.2.5", "addr 192.0.2.6", "100.64.0.10:80", "192.0.2.5:80"} {
		if !strings.Contains(dump, want) {
			t.Errorf("kernel lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "10.96.0.10") {
		t.Errorf("the mapped ClusterIP is programmed:\n%s", dump)
	}

	// The cluster has not synced after a restart: its bound external IPs
	// and their virtual servers stay, like its VIPs.
	c2 := cluster("alpha", false, []string{"10.96.0.0/16"})
	c2.LocalServiceCIDR, c2.AllowExternalIPs = c.LocalServiceCIDR, c.AllowExternalIPs
	e.sync(state(c2), false)
	if got := e.k.Dump(); got != dump {
		t.Errorf("an unsynced cluster's addresses changed:\n%s\nwant:\n%s", got, dump)
	}
	// Synced without the external IPs: they are unbound.
	web2 := *web
	web2.ExternalIPs = nil
	e.sync(state(cluster("alpha", true, []string{"10.96.0.0/16"}, &web2)), false)
	if got := e.k.Dump(); strings.Contains(got, "192.0.2.5") {
		t.Errorf("an external IP stayed after its service lost it:\n%s", got)
	}
}
