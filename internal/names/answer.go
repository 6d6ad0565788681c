package names

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// udpSize is the EDNS buffer size offered and the most a UDP answer
// takes: 1232 avoids IP fragmentation on any path (DNS flag day 2020).
const udpSize = 1232

// Answer is the reply to req from ix, with ttl seconds on every record.
// It never fails: whatever req holds gets a well-formed reply, or none
// (nil) for a message that is itself a reply, which must never be
// answered (two servers would echo each other forever).
func Answer(ix *Index, req *dns.Msg, ttl uint32) *dns.Msg {
	if req.Response {
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, false
	if opts(req) > 1 {
		// RFC 6891 6.1.1: more than one OPT is a malformed query.
		m.Rcode = dns.RcodeFormatError
		m.Authoritative = false
		return m
	}
	if opt := req.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			m.SetRcode(req, dns.RcodeBadVers)
			m.SetEdns0(udpSize, false)
			return m
		}
		m.SetEdns0(udpSize, false)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		m.Authoritative = false
		return m
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		m.Authoritative = false
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return refuse(m)
	}
	if a, ok := reverseAddr(name); ok {
		return ix.reverse(m, q, a, ttl)
	}
	zone := ix.zoneOf(name)
	if zone == "" {
		return refuse(m)
	}
	if ix.unready[zone] {
		m.Rcode = dns.RcodeServerFailure
		m.Authoritative = false
		return m
	}
	if !ix.names[name] {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(zone, ttl)}
		return m
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	if target, ok := ix.cname[name]; ok {
		// A CNAME is its name's only record (RFC 1034 3.6.2), the answer
		// to every type. It is not followed: the target is outside our
		// zones, and the client's resolver asks the world for it.
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: target})
		return m
	}
	for _, a := range ix.hosts[name] {
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	if q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY {
		for _, t := range ix.srv[name] {
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(dns.TypeSRV), Priority: 0, Weight: 100, Port: t.port, Target: t.target})
			// The target's addresses, so that a client needs no second query.
			for _, a := range ix.hosts[t.target] {
				m.Extra = append(m.Extra, addrRR(t.target, a, ttl))
			}
		}
	}
	if name == zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, soa(zone, ttl))
	}
	if len(m.Answer) == 0 {
		// NODATA: the name exists without records of this type.
		m.Ns = []dns.RR{soa(zone, ttl)}
	}
	return m
}

// opts counts the OPT records of req, wherever they are.
func opts(req *dns.Msg) int {
	n := 0
	for _, sec := range [][]dns.RR{req.Answer, req.Ns, req.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				n++
			}
		}
	}
	return n
}

func refuse(m *dns.Msg) *dns.Msg {
	m.Rcode = dns.RcodeRefused
	m.Authoritative = false
	return m
}

func addrRR(name string, a netip.Addr, ttl uint32) dns.RR {
	if a.Is4() {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: a.AsSlice()}
}

// soa is the zone's SOA record. Its minimum is the TTL, which resolvers
// take as how long to cache a "no such name" (RFC 2308): a service made
// right after a lookup failed resolves within that time.
func soa(zone string, ttl uint32) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "kube-outpost." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: ttl,
	}
}

// reverse answers a PTR query for a, whose reverse name it is: ours only
// when a is in a cluster's service range.
func (ix *Index) reverse(m *dns.Msg, q dns.Question, a netip.Addr, ttl uint32) *dns.Msg {
	var in netip.Prefix
	for _, p := range ix.ranges {
		if p.Contains(a) {
			in = p
			break
		}
	}
	if !in.IsValid() {
		return refuse(m)
	}
	zone := reverseZone(in)
	names := ix.ptr[a]
	if len(names) == 0 {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(zone, ttl)}
		return m
	}
	if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
		for _, n := range names {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: n})
		}
		return m
	}
	m.Ns = []dns.RR{soa(zone, ttl)}
	return m
}

// reverseAddr is the address a full reverse name (in-addr.arpa with four
// labels, ip6.arpa with 32 nibbles) stands for.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(labels[3] + "." + labels[2] + "." + labels[1] + "." + labels[0])
		return a, err == nil && a.Is4()
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			n := strings.IndexByte("0123456789abcdef", l[0])
			if n < 0 {
				return netip.Addr{}, false
			}
			// labels[0] is the lowest nibble of the last byte.
			at := 15 - i/2
			if i%2 == 0 {
				b[at] |= byte(n)
			} else {
				b[at] |= byte(n) << 4
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// reverseZone is the reverse name of the range rounded out to a label
// boundary: the owner of the SOA in negative answers.
func reverseZone(p netip.Prefix) string {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		n := p.Bits() / 8
		var labels []string
		for i := n - 1; i >= 0; i-- {
			labels = append(labels, strconv.Itoa(int(b[i])))
		}
		return strings.Join(append(labels, "in-addr.arpa."), ".")
	}
	b := a.As16()
	n := p.Bits() / 4
	var labels []string
	for i := n - 1; i >= 0; i-- {
		nib := b[i/2] >> 4
		if i%2 == 1 {
			nib = b[i/2] & 0xf
		}
		labels = append(labels, string("0123456789abcdef"[nib]))
	}
	return strings.Join(append(labels, "ip6.arpa."), ".")
}
