package hostcheck

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

type fakeSource struct {
	addrs  []Address
	routes []Route
	err    error
	asked  int
}

func (f *fakeSource) Addrs() ([]Address, error) { f.asked++; return f.addrs, f.err }
func (f *fakeSource) Routes() ([]Route, error)  { return f.routes, f.err }

func cluster(name, local string) config.Cluster {
	c := config.Cluster{Name: name, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}
	if local != "" {
		c.LocalServiceCIDR = netip.MustParsePrefix(local)
	}
	return c
}

func TestCheck(t *testing.T) {
	src := &fakeSource{
		addrs: []Address{{netip.MustParseAddr("10.250.0.2"), "eth0"}, {netip.MustParseAddr("100.66.0.1"), "lo"}},
		routes: []Route{
			{Dst: netip.MustParsePrefix("10.250.0.0/24"), Link: "eth0", Connected: true},
			{Dst: netip.MustParsePrefix("100.64.0.0/10"), Link: "eth0"}, // via a gateway: how packets leave
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Link: "wg0", Connected: true},
			{Dst: netip.MustParsePrefix("172.16.0.0/12"), Link: "br0", Connected: true},
		},
	}
	got, err := Check([]config.Cluster{
		cluster("a", "100.64.0.0/16"), // fine: only a gateway route covers it
		cluster("b", "100.66.0.0/16"), // holds an address of lo
		cluster("c", "172.20.0.0/16"), // inside a connected network
		cluster("d", "10.250.0.0/16"), // holds an address and a connected network
		cluster("e", ""),              // maps nothing
	}, src)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`cluster "b": local_service_cidr 100.66.0.0/16 collides with address 100.66.0.1 on lo of this host`,
		`cluster "c": local_service_cidr 172.20.0.0/16 collides with connected route 172.16.0.0/12 on br0 of this host`,
		`cluster "d": local_service_cidr 10.250.0.0/16 collides with address 10.250.0.2 on eth0 of this host`,
		`cluster "d": local_service_cidr 10.250.0.0/16 collides with connected route 10.250.0.0/24 on eth0 of this host`,
	}
	var msgs []string
	for _, c := range got {
		e := c.Error()
		if !strings.Contains(e, "choose a range this host neither has an address in nor a connected route to") {
			t.Errorf("%q does not say how to fix it", e)
		}
		msgs = append(msgs, strings.SplitN(e, ":", 3)[0]+":"+strings.SplitN(e, ":", 3)[1])
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Errorf("collisions:\n%q\nwant:\n%q", msgs, want)
	}
}

// TestCheckServiceRangesAndExternalIPs: every service range as it appears
// here, not only local_service_cidr, is refused when it holds a host
// address or the default gateway or overlaps a connected network; a
// service range mapped away by local_service_cidr is not on this host.
// allow_external_ips is the admin's opt-in and may overlap the host's LAN,
// but not hold its addresses or gateways.
func TestCheckServiceRangesAndExternalIPs(t *testing.T) {
	src := &fakeSource{
		addrs: []Address{{netip.MustParseAddr("10.0.5.20"), "eth0"}, {netip.MustParseAddr("fd00:5::20"), "eth0"}},
		routes: []Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Link: "eth0", Gateway: netip.MustParseAddr("10.0.5.1")},
			{Dst: netip.MustParsePrefix("::/0"), Link: "eth0", Gateway: netip.MustParseAddr("fd00:5::1")},
			{Dst: netip.MustParsePrefix("10.0.5.0/28"), Link: "eth0", Connected: true},
			{Dst: netip.MustParsePrefix("fd00:5::/64"), Link: "eth0", Connected: true},
			{Dst: netip.MustParsePrefix("192.168.0.0/16"), Link: "eth0", Gateway: netip.MustParseAddr("10.0.5.2")},
		},
	}
	p := netip.MustParsePrefix
	got, err := Check([]config.Cluster{
		// 10.0.0.0/16 holds the host's address, its gateway and its network.
		{Name: "a", ServiceCIDRs: []netip.Prefix{p("10.96.0.0/16"), p("10.0.0.0/16")}},
		// Mapped away, the same range is not on this host.
		{Name: "b", ServiceCIDRs: []netip.Prefix{p("10.0.0.0/16")}, LocalServiceCIDR: p("100.64.0.0/16")},
		{Name: "c", ServiceCIDRs: []netip.Prefix{p("10.97.0.0/16"), p("fd00:5::/112")},
			AllowExternalIPs: []netip.Prefix{p("192.168.10.0/24"), p("10.0.5.0/31")}},
	}, src)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`cluster "a": service_cidrs[1] 10.0.0.0/16 collides with address 10.0.5.20 on eth0 of this host: a ClusterIP the cluster sets there would take over this host's own traffic; set local_service_cidr`,
		`cluster "a": service_cidrs[1] 10.0.0.0/16 collides with default gateway 10.0.5.1 of this host: a ClusterIP`,
		`cluster "a": service_cidrs[1] 10.0.0.0/16 collides with connected route 10.0.5.0/28 on eth0 of this host: a ClusterIP`,
		`cluster "c": service_cidrs[1] fd00:5::/112 collides with address fd00:5::20 on eth0 of this host: a ClusterIP`,
		`cluster "c": service_cidrs[1] fd00:5::/112 collides with default gateway fd00:5::1 of this host: a ClusterIP`,
		`cluster "c": service_cidrs[1] fd00:5::/112 collides with connected route fd00:5::/64 on eth0 of this host: a ClusterIP`,
		`cluster "c": allow_external_ips[1] 10.0.5.0/31 holds default gateway 10.0.5.1 of this host: an external IP the cluster sets there would take over this host's own traffic`,
	}
	if len(got) != len(want) {
		t.Fatalf("%d collisions, want %d:\n%v", len(got), len(want), got)
	}
	for i, c := range got {
		if !strings.HasPrefix(c.Error(), want[i]) {
			t.Errorf("collision %d:\n%s\nwant it to start with\n%s", i, c.Error(), want[i])
		}
	}
}

func TestCheckNoRanges(t *testing.T) {
	src := &fakeSource{err: errors.New("no netlink here")}
	if got, err := Check([]config.Cluster{{Name: "a"}}, src); err != nil || got != nil || src.asked != 0 {
		t.Errorf("Check without ranges = %v, %v after %d reads; want nothing, and no read", got, err, src.asked)
	}
	if _, err := Check([]config.Cluster{cluster("a", "")}, src); err == nil {
		t.Error("a read error was not returned")
	}
}
