package hostcheck

import (
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// Netlink reads the host's addresses and routes from the kernel.
type Netlink struct {
	// IgnoreLinks are interfaces whose addresses and routes are not the
	// host's network: ipvs mode's outpost0 holds the VIPs themselves.
	IgnoreLinks []string
}

var _ Source = Netlink{}

// Addrs implements Source.
func (n Netlink) Addrs() ([]Address, error) {
	list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	names := linkNames()
	var out []Address
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		link := names[a.LinkIndex]
		if !ok || slices.Contains(n.IgnoreLinks, link) {
			continue
		}
		out = append(out, Address{IP: ip.Unmap(), Link: link})
	}
	return out, nil
}

// Routes implements Source: the main table's unicast routes.
func (n Netlink) Routes() ([]Route, error) {
	list, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	names := linkNames()
	var out []Route
	for _, r := range list {
		link := names[r.LinkIndex]
		if slices.Contains(n.IgnoreLinks, link) {
			continue
		}
		var dst netip.Prefix
		switch {
		case r.Dst != nil:
			var ok bool
			if dst, ok = prefixOf(r.Dst); !ok {
				continue
			}
		case r.Family == netlink.FAMILY_V6:
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0) // a default route
		default:
			dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		gw := r.Gw
		if gw == nil && len(r.MultiPath) > 0 {
			gw = r.MultiPath[0].Gw
		}
		var via netip.Addr
		if ip, ok := netip.AddrFromSlice(gw); ok {
			via = ip.Unmap()
		}
		out = append(out, Route{Dst: dst, Link: link, Gateway: via, Connected: r.Scope == netlink.SCOPE_LINK && r.Gw == nil && len(r.MultiPath) == 0})
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ones).Masked(), true
}

// linkNames maps interface indexes to names; a link that vanished in
// between is named by nothing, which is still enough to report.
func linkNames() map[int]string {
	out := map[int]string{}
	links, err := netlink.LinkList()
	if err != nil {
		return out
	}
	for _, l := range links {
		out[l.Attrs().Index] = l.Attrs().Name
	}
	return out
}
