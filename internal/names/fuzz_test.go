package names

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswer: whatever bytes arrive, the answer is made without a panic
// and packs into a message, or is none (a reply is never answered).
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
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return // the server drops what does not unpack
		}
		m := Answer(ix, req, 5)
		if m == nil {
			if !req.Response {
				t.Fatalf("no answer to a query: %v", req)
			}
			return
		}
		m.Truncate(dns.MinMsgSize)
		if _, err := m.Pack(); err != nil {
			t.Fatalf("the answer does not pack: %v\n%v", err, m)
		}
	})
}
