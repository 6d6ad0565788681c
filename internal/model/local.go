package model

import "net/netip"

// mappedCIDR is the service CIDR that local stands for: the only one of
// local's family, of the same size. Load refuses any other arrangement;
// the model checks again rather than map a ClusterIP to an address of
// another cluster's range.
func mappedCIDR(serviceCIDRs []netip.Prefix, local netip.Prefix) netip.Prefix {
	if !local.IsValid() {
		return netip.Prefix{}
	}
	var found netip.Prefix
	n := 0
	for _, p := range serviceCIDRs {
		if p.Addr().Is4() == local.Addr().Is4() {
			found = p
			n++
		}
	}
	if n != 1 || found.Bits() != local.Bits() {
		return netip.Prefix{}
	}
	return found
}

// effectiveRanges are the service CIDRs with the mapped one replaced by
// local.
func effectiveRanges(serviceCIDRs []netip.Prefix, local netip.Prefix) []netip.Prefix {
	from := mappedCIDR(serviceCIDRs, local)
	out := make([]netip.Prefix, 0, len(serviceCIDRs))
	for _, p := range serviceCIDRs {
		if from.IsValid() && p == from {
			out = append(out, local)
			continue
		}
		out = append(out, p)
	}
	return out
}

// mapAddr moves ip from range from to the same offset in range to, which
// has the same size; ip must be in from.
func mapAddr(ip netip.Addr, from, to netip.Prefix) netip.Addr {
	a, t := ip.As16(), to.Addr().As16()
	bits := from.Bits()
	if ip.Is4() {
		bits += 96 // As16 puts an IPv4 address in the last 4 bytes
	}
	for i := range a {
		switch {
		case bits >= 8:
			a[i] = t[i]
			bits -= 8
		case bits > 0:
			mask := byte(0xff) << (8 - bits)
			a[i] = t[i]&mask | a[i]&^mask
			bits = 0
		}
	}
	out := netip.AddrFrom16(a)
	if ip.Is4() {
		return out.Unmap()
	}
	return out
}

// LocalFor maps a ClusterIP of cluster c to where this host reaches it;
// ok is false when c maps no range holding ip.
func (c *ClusterState) LocalFor(ip netip.Addr) (netip.Addr, bool) {
	from := c.MappedCIDR()
	if !from.IsValid() || !from.Contains(ip) {
		return netip.Addr{}, false
	}
	return mapAddr(ip, from, c.LocalServiceCIDR), true
}
