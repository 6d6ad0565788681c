package names

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswer: whatever datagram arrives, the answer is made without a
// panic, is a reply to its id and packs into what UDP carries, or is
// none (too short for a header, or a reply, which is never answered).
func FuzzAnswer(f *testing.F) {
	ix := Build(namedState(), testZones)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.shop.svc.prod.internal.", dns.TypeA},
		{"_http._tcp.web.shop.svc.prod.internal.", dns.TypeSRV},
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR},
		{"_peer._tcp.db.shop.svc.prod.internal.", dns.TypeSRV},
		{"ext.shop.svc.prod.internal.", dns.TypeAAAA},
		{"example.com.", dns.TypeANY},
	} {
		req := new(dns.Msg)
		req.SetQuestion(q.name, q.qtype)
		req.SetEdns0(4096, true)
		b, err := req.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 1, 2})
	s := New(Options{})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, m := s.replyDatagram(ix, b)
		if m == nil {
			if len(b) >= dnsHeaderSize && b[2]&0x80 == 0 {
				t.Fatalf("no answer to a query: %v", req)
			}
			return
		}
		if !m.Response || m.Id != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("the answer is not a reply to the query's id: %v", m)
		}
		out, err := m.Pack()
		if err != nil {
			t.Fatalf("the answer does not pack: %v\n%v", err, m)
		}
		if limit := udpSize; len(out) > limit {
			t.Fatalf("a UDP answer of %d bytes, over %d", len(out), limit)
		}
	})
}
