package iptables

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/model"
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

// TestForgetSetMatchesUDP: one set matches the entries of every flow of a
// batch, whatever the client, and nothing else: not another protocol, not
// the same endpoint reached at another VIP or directly, not another port.
func TestForgetSetMatchesUDP(t *testing.T) {
	set := newForgetSet()
	for _, f := range []Flow{
		{netip.MustParseAddrPort("10.96.0.53:53"), netip.MustParseAddrPort("10.0.0.1:5353")},
		{netip.MustParseAddrPort("192.168.0.5:30053"), netip.MustParseAddrPort("10.0.0.1:5353")},
		{netip.MustParseAddrPort("[fd00:96::53]:53"), netip.MustParseAddrPort("[fd00::1]:5353")},
	} {
		set.udp[f] = struct{}{}
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

// TestForgetSetMatchesUndiverted: a portal's entries without DNAT (the
// reply comes from the portal itself) match, in its protocol; those with
// DNAT, of another protocol or another port, do not.
func TestForgetSetMatchesUndiverted(t *testing.T) {
	set := newForgetSet()
	for _, p := range []Portal{
		{model.TCP, netip.MustParseAddrPort("10.96.0.80:80")},
		{model.UDP, netip.MustParseAddrPort("10.96.0.53:53")},
		{model.TCP, netip.MustParseAddrPort("[fd00:96::80]:80")},
	} {
		proto, _ := p.Protocol.IPNumber()
		set.undiverted[protoAddrPort{proto, p.Addr}] = struct{}{}
	}
	for _, c := range []struct {
		name  string
		entry *netlink.ConntrackFlow
		want  bool
	}{
		{"tcp without dnat", ctEntry(unix.IPPROTO_TCP, "10.250.0.2:52682", "10.96.0.80:80", "10.96.0.80:80"), true},
		{"udp without dnat", ctEntry(unix.IPPROTO_UDP, "10.250.0.2:40000", "10.96.0.53:53", "10.96.0.53:53"), true},
		{"ipv6 without dnat", ctEntry(unix.IPPROTO_TCP, "[fd00::9]:40000", "[fd00:96::80]:80", "[fd00:96::80]:80"), true},
		{"tcp with dnat", ctEntry(unix.IPPROTO_TCP, "10.250.0.2:52683", "10.96.0.80:80", "10.244.1.5:8080"), false},
		{"udp portal's address in tcp", ctEntry(unix.IPPROTO_TCP, "10.250.0.2:40000", "10.96.0.53:53", "10.96.0.53:53"), false},
		{"another port", ctEntry(unix.IPPROTO_TCP, "10.250.0.2:40000", "10.96.0.80:81", "10.96.0.80:81"), false},
		{"another address", ctEntry(unix.IPPROTO_TCP, "10.250.0.2:40000", "10.96.0.81:80", "10.96.0.81:80"), false},
	} {
		if got := set.MatchConntrackFlow(c.entry); got != c.want {
			t.Errorf("%s: matched %v, want %v", c.name, got, c.want)
		}
	}
}
