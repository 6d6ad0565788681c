package names

import (
	"net/netip"
	"strings"
)

// ReverseZones are the reverse zones that hold the reverse names of the
// addresses in ranges and of no others, without the final dot: what a
// resolver should forward to the server for PTR queries. A range that
// does not end on a label boundary (a byte for IPv4, a nibble for IPv6)
// is split into the zones one label longer: 10.96.0.0/12 is the sixteen
// zones 96.10 to 111.10.in-addr.arpa, not 10.in-addr.arpa, whose other
// names the server refuses and a resolver must keep asking elsewhere.
func ReverseZones(ranges []netip.Prefix) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ranges {
		p = p.Masked()
		step := 8
		if p.Addr().Is6() {
			step = 4
		}
		aligned := (p.Bits() + step - 1) / step * step
		n := 1 << (aligned - p.Bits())
		a := p.Addr()
		for range n {
			z := strings.TrimSuffix(reverseZone(netip.PrefixFrom(a, aligned)), ".")
			if !seen[z] {
				seen[z] = true
				out = append(out, z)
			}
			a = nextBlock(a, aligned)
		}
	}
	return out
}

// nextBlock is the first address after the /bits block that a starts.
func nextBlock(a netip.Addr, bits int) netip.Addr {
	b := a.AsSlice()
	// Add 1 at bit position bits-1, counted from the most significant.
	i, carry := (bits-1)/8, byte(1)<<(7-(bits-1)%8)
	for ; i >= 0 && carry != 0; i-- {
		sum := uint16(b[i]) + uint16(carry)
		b[i], carry = byte(sum), byte(sum>>8)
	}
	next, _ := netip.AddrFromSlice(b)
	return next
}
