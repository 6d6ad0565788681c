package names

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startServer serves testState on loopback, counting what it drops.
func startServer(t *testing.T, qps float64) (*Server, *drops) {
	t.Helper()
	d := &drops{n: map[string]int{}}
	s := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second,
		Log: slog.New(slog.DiscardHandler), Dropped: d.add, MaxQPS: qps})
	s.Set(Build(testState(), testZones))
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, d
}

type drops struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *drops) add(reason string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n[reason] += n
}

func (d *drops) get(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[reason]
}

// header is a query's header with id 0x1234 and the counts given.
func header(qd, an, ns, ar uint16) []byte {
	b := []byte{0x12, 0x34, 0x01, 0x00}
	for _, n := range []uint16{qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, n)
	}
	return b
}

func packed(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMalformedDatagrams: whatever a datagram holds, the server answers
// FORMERR (or what the query deserves) or drops it, counted, and goes on
// answering.
func TestMalformedDatagrams(t *testing.T) {
	s, d := startServer(t, 0)
	addr := s.Addrs()[0].String()
	aQuestion := []byte{3, 'w', 'e', 'b', 0, 0, 1, 0, 1}
	// Five labels of 63: a name of 321 bytes, over the 255 allowed.
	var longWire []byte
	for range 5 {
		longWire = append(longWire, 63)
		longWire = append(longWire, bytes.Repeat([]byte{'a'}, 63)...)
	}
	longWire = append(longWire, 0, 0, 1, 0, 1)

	many := new(dns.Msg)
	many.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	for range 200 {
		many.Question = append(many.Question, many.Question[0])
	}
	twoOPT := new(dns.Msg)
	twoOPT.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	twoOPT.SetEdns0(1232, false)
	twoOPT.SetEdns0(4096, true)
	badVers := new(dns.Msg)
	badVers.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	tinyEDNS := new(dns.Msg)
	tinyEDNS.SetQuestion("_http._tcp.web.shop.svc.prod.internal.", dns.TypeSRV)
	tinyEDNS.SetEdns0(0, false)
	reply := new(dns.Msg)
	reply.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	reply.Response = true
	update := new(dns.Msg)
	update.SetUpdate("prod.internal.")

	// An OPT whose option claims more bytes than the record holds.
	badOption := append(header(1, 0, 0, 1), aQuestion...)
	badOption = append(badOption, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 8, 0, 10, 0, 200, 1, 2, 3, 4)

	for _, c := range []struct {
		name  string
		b     []byte
		rcode int // -1: dropped unanswered
	}{
		{"empty", nil, -1},
		{"shorter than a header", []byte{0x12, 0x34, 1, 0, 0}, -1},
		{"a header whose question is missing", header(1, 0, 0, 0), dns.RcodeFormatError},
		{"a question cut short", append(header(1, 0, 0, 0), 3, 'w', 'e'), dns.RcodeFormatError},
		{"a compression pointer to itself", append(header(1, 0, 0, 0), 0xc0, 12, 0, 1, 0, 1), dns.RcodeFormatError},
		{"two pointers to each other", append(header(1, 0, 0, 0), 0xc0, 14, 0xc0, 12, 0, 1, 0, 1), dns.RcodeFormatError},
		{"a pointer past the end", append(header(1, 0, 0, 0), 0xc0, 0xff, 0, 1, 0, 1), dns.RcodeFormatError},
		{"a name of 321 bytes", append(header(1, 0, 0, 0), longWire...), dns.RcodeFormatError},
		{"a label over 63 bytes", append(append(header(1, 0, 0, 0), 64), append(bytes.Repeat([]byte{'a'}, 64), 0, 0, 1, 0, 1)...), dns.RcodeFormatError},
		{"201 questions", packed(t, many), dns.RcodeFormatError},
		{"65535 questions claimed, one given", append(header(65535, 0, 0, 0), aQuestion...), dns.RcodeFormatError},
		{"no question", header(0, 0, 0, 0), dns.RcodeFormatError},
		{"two OPT records", packed(t, twoOPT), dns.RcodeFormatError},
		{"EDNS version 1", packed(t, badVers), dns.RcodeBadVers},
		{"an OPT option longer than its record", badOption, dns.RcodeFormatError},
		{"EDNS buffer size 0", packed(t, tinyEDNS), dns.RcodeSuccess},
		{"a reply", packed(t, reply), -1},
		{"an UPDATE", packed(t, update), dns.RcodeNotImplemented},
		// The zeros are a question of the root, class 0, and then bytes
		// past the message, which are not read.
		{"a 64 KB datagram of zeros after a header", append(header(1, 0, 0, 0), make([]byte, 65000)...), dns.RcodeRefused},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := d.get(DropMalformed)
			m, err := exchangeRaw(addr, c.b, 300*time.Millisecond)
			switch {
			case c.rcode < 0 && err == nil:
				t.Errorf("answered %s, want it dropped", dns.RcodeToString[m.Rcode])
			case c.rcode < 0:
				// Counted once read, which a busy machine may delay.
				for end := time.Now().Add(2 * time.Second); d.get(DropMalformed) == before && time.Now().Before(end); {
					time.Sleep(10 * time.Millisecond)
				}
				if got := d.get(DropMalformed) - before; got != 1 {
					t.Errorf("%d counted as malformed, want 1", got)
				}
			case err != nil:
				t.Errorf("no answer, want %s: %v", dns.RcodeToString[c.rcode], err)
			case m.Rcode != c.rcode || m.Id != binary.BigEndian.Uint16(c.b):
				t.Errorf("answered %s to id %#x, want %s to id %#x", dns.RcodeToString[m.Rcode], m.Id, dns.RcodeToString[c.rcode], c.b[:2])
			}
			// Whatever came before, a query is answered.
			q := new(dns.Msg)
			q.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
			if m, err := exchangeRaw(addr, packed(t, q), 2*time.Second); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
				t.Fatalf("a query after it: %v %v", m, err)
			}
		})
	}
}

// exchangeRaw sends b in one datagram to addr and returns the answer,
// or an error when none comes within wait.
func exchangeRaw(addr string, b []byte, wait time.Duration) (*dns.Msg, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, errors.New("no answer")
	}
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		return nil, err
	}
	return m, nil
}
