package names

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUDPFlood: a flood far above the rate is answered at the rate, the
// rest dropped by the kernel and counted, every datagram one or the
// other; once it ends, a query is answered at once.
func TestUDPFlood(t *testing.T) {
	const (
		qps  = 1000
		sent = 20000
	)
	var answered atomic.Int64
	var mu sync.Mutex
	var first, last time.Time
	d := &drops{n: map[string]int{}}
	s := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second,
		Log: slog.New(slog.DiscardHandler), Dropped: d.add, MaxQPS: qps,
		Answered: func(string, int, time.Duration) {
			answered.Add(1)
			mu.Lock()
			defer mu.Unlock()
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
		}})
	s.Set(Build(testState(), testZones))
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	to := s.Addrs()[0].(*net.UDPAddr)

	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	b := packed(t, q)
	for range sent {
		if _, err := c.WriteToUDP(b, to); err != nil {
			t.Fatal(err)
		}
	}
	// The queue the kernel kept drains at the rate; the last query
	// then carries the kernel's count of all it dropped.
	deadline := time.Now().Add(10 * time.Second)
	for prev := int64(-1); answered.Load() != prev && time.Now().Before(deadline); {
		prev = answered.Load()
		time.Sleep(300 * time.Millisecond)
	}
	mu.Lock()
	took, flood := last.Sub(first), int(answered.Load())
	mu.Unlock()
	if m, err := exchangeRaw(to.String(), b, 2*time.Second); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("a query after the flood: %v %v", m, err)
	}
	eventually := time.Now().Add(2 * time.Second)
	for int(answered.Load())+d.get(DropOverflow) < sent+1 && time.Now().Before(eventually) {
		time.Sleep(10 * time.Millisecond)
	}
	n, dropped := int(answered.Load()), d.get(DropOverflow)
	if n+dropped != sent+1 {
		t.Errorf("%d answered and %d counted as dropped, want %d in all", n, dropped, sent+1)
	}
	if dropped == 0 {
		t.Errorf("nothing dropped of %d queries sent at once", sent)
	}
	// The flood's answers came no faster than the rate after its first
	// burst (a tenth of a second's).
	if floor := time.Duration(float64(flood-qps/10) / qps * float64(time.Second) * 0.9); took < floor {
		t.Errorf("%d answers in %v, faster than %d a second (at least %v)", flood, took, qps, floor)
	}
	t.Logf("%d of %d answered, the flood's %d in %v; %d dropped", n, sent+1, flood, took, dropped)
}

// TestTCPWaitsItsTurn: a TCP query waits for the rate, and one that would
// wait longer than a client may take to send one is dropped, counted.
func TestTCPWaitsItsTurn(t *testing.T) {
	// One query, then the next in 2.5 s: over tcpTimeout.
	s, d := startServer(t, 0.4)
	c, err := dns.Dial("tcp", s.Addrs()[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	ask := func() (*dns.Msg, error) {
		c.SetDeadline(time.Now().Add(time.Second))
		if err := c.WriteMsg(q); err != nil {
			return nil, err
		}
		return c.ReadMsg()
	}
	if m, err := ask(); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("the first query: %v %v", m, err)
	}
	if m, err := ask(); err == nil {
		t.Fatalf("a second query within the rate's wait answered: %v", m)
	}
	if got := d.get(DropRate); got != 1 {
		t.Errorf("%d counted as dropped for the rate, want 1", got)
	}
}
