package iptables

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ctEntry is a conntrack entry as netlink parses it: client -> vip,
// answered by ep.
func ctEntry(proto uint8, client, vip, ep string) *netlink.ConntrackFlow {
	c, v, e := netip.MustParseAddrPort(client), netip.MustParseAddrPort(vip), netip.MustParseAddrPort(ep)
	return &netlink.ConntrackFlow{
		Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.IP(c.Addr().AsSlice()), SrcPort: c.Port(),
			DstIP: net.IP(v.Addr().AsSlice()), DstPort: v.Port()},
		Reverse: netlink.IPTuple{Protocol: proto, SrcIP: net.IP(e.Addr().AsSlice()), SrcPort: e.Port(),
			DstIP: net.IP(c.Addr().AsSlice()), DstPort: c.Port()},
	}
}

// TestFlowSetMatches: one set matches the entries of every flow of a
// batch, whatever the client, and nothing else: not another protocol, not
// the same endpoint reached at another VIP or directly, not another port.
func TestFlowSetMatches(t *testing.T) {
	set := flowSet{}
	for _, f := range []Flow{
		{netip.MustParseAddrPort("10.96.0.53:53"), netip.MustParseAddrPort("10.0.0.1:5353")},
		{netip.MustParseAddrPort("192.168.0.5:30053"), netip.MustParseAddrPort("10.0.0.1:5353")},
		{netip.MustParseAddrPort("[fd00:96::53]:53"), netip.MustParseAddrPort("[fd00::1]:5353")},
	} {
		set[f] = struct{}{}
	}
	v4in16 := ctEntry(unix.IPPROTO_UDP, "192.168.0.9:40000", "10.96.0.53:53", "10.0.0.1:5353")
	v4in16.Forward.DstIP, v4in16.Reverse.SrcIP = v4in16.Forward.DstIP.To16(), v4in16.Reverse.SrcIP.To16()
	for _, c := range []struct {
		name  string
		entry *netlink.ConntrackFlow
		want  bool
	}{
		{"vip", ctEntry(unix.IPPROTO_UDP, "192.168.0.5:40000", "10.96.0.53:53", "10.0.0.1:5353"), true},
		{"vip, another client", ctEntry(unix.IPPROTO_UDP, "192.168.1.20:1234", "10.96.0.53:53", "10.0.0.1:5353"), true},
		{"vip, IPv4 in 16 bytes", v4in16, true},
		{"node port", ctEntry(unix.IPPROTO_UDP, "192.168.1.20:1234", "192.168.0.5:30053", "10.0.0.1:5353"), true},
		{"ipv6", ctEntry(unix.IPPROTO_UDP, "[fd00:ffff::5]:40000", "[fd00:96::53]:53", "[fd00::1]:5353"), true},
		{"tcp", ctEntry(unix.IPPROTO_TCP, "192.168.0.5:40000", "10.96.0.53:53", "10.0.0.1:5353"), false},
		{"endpoint kept", ctEntry(unix.IPPROTO_UDP, "192.168.0.5:40000", "10.96.0.53:53", "10.0.0.2:5353"), false},
		{"endpoint's other port", ctEntry(unix.IPPROTO_UDP, "192.168.0.5:40000", "10.96.0.53:53", "10.0.0.1:5354"), false},
		{"another vip", ctEntry(unix.IPPROTO_UDP, "192.168.0.5:40000", "10.96.0.54:53", "10.0.0.1:5353"), false},
		{"endpoint reached directly", ctEntry(unix.IPPROTO_UDP, "192.168.0.5:40000", "10.0.0.1:5353", "10.0.0.1:5353"), false},
	} {
		if got := set.MatchConntrackFlow(c.entry); got != c.want {
			t.Errorf("%s: matched %v, want %v", c.name, got, c.want)
		}
	}
}
