package names

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kube-outpost/kube-outpost/internal/proxy/kernelbench"
)

var benchZones = Zones{"bench": {"bench.internal"}}

// benchQuery is one query of the mix and the rcode it must get.
type benchQuery struct {
	b     []byte
	rcode int
}

// benchMix is the queries the server benchmark sends, over services
// spread across the n: six in ten A of a service, two in ten SRV of its
// named port, two in ten A of a service that does not exist.
func benchMix(b *testing.B, n int) []benchQuery {
	var out []benchQuery
	for i := range 1000 {
		svc := fmt.Sprintf("svc-%d.ns.svc.bench.internal.", i*n/1000)
		q, rcode := new(dns.Msg), dns.RcodeSuccess
		switch i % 10 {
		case 0, 1:
			q.SetQuestion("_http._tcp."+svc, dns.TypeSRV)
		case 2, 3:
			q.SetQuestion(fmt.Sprintf("nope-%d.ns.svc.bench.internal.", i), dns.TypeA)
			rcode = dns.RcodeNameError
		default:
			q.SetQuestion(svc, dns.TypeA)
		}
		p, err := q.Pack()
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, benchQuery{p, rcode})
	}
	return out
}

// BenchmarkServerUDP: the real server over UDP on loopback, answering
// from the index of BENCH_SERVICES (10,000) services × 10 endpoints,
// without its rate limit: what it can answer. Clients, two per CPU,
// each send a query and wait for its answer; every answer's rcode is
// checked. Reports queries a second and the latency seen by the client
// (p50, p99, µs).
func BenchmarkServerUDP(b *testing.B) {
	n := kernelbench.Services(b)
	s := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second,
		Log: slog.New(slog.DiscardHandler), MaxQPS: 1e9})
	s.Set(Build(kernelbench.Big(n, kernelbench.EndpointsPerService), benchZones))
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	addr := s.Addrs()[0].String()
	mix := benchMix(b, n)
	clients := 2 * runtime.GOMAXPROCS(0)

	var (
		mu    sync.Mutex
		took  []time.Duration
		first error
	)
	work := make(chan int, clients)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			mine, err := benchClient(addr, mix, c, work)
			mu.Lock()
			defer mu.Unlock()
			took = append(took, mine...)
			if first == nil {
				first = err
			}
		})
	}
	for i := 0; i < b.N; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if first != nil {
		b.Fatal(first)
	}
	slices.Sort(took)
	at := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))]) / float64(time.Microsecond) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "qps")
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// benchClient sends the i-th query of mix for each i of work from a
// socket of its own, each after the last is answered, and returns how
// long each took; an answer that is late (1 s), with another id or the
// wrong rcode stops it.
func benchClient(addr string, mix []benchQuery, c int, work <-chan int) ([]time.Duration, error) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var took []time.Duration
	buf, out := make([]byte, 4096), make([]byte, 0, 512)
	m := new(dns.Msg)
	for i := range work {
		q := mix[(i*7+c)%len(mix)]
		id := uint16(i)
		// A copy: the mix is every client's.
		out = append(out[:0], q.b...)
		binary.BigEndian.PutUint16(out, id)
		t0 := time.Now()
		if _, err := conn.Write(out); err != nil {
			return took, err
		}
		conn.SetReadDeadline(t0.Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			return took, fmt.Errorf("query %d: %w", i, err)
		}
		took = append(took, time.Since(t0))
		if err := m.Unpack(buf[:n]); err != nil || m.Id != id || m.Rcode != q.rcode {
			return took, fmt.Errorf("query %d: answer %v (%v), want id %d rcode %s", i, m, err, id, dns.RcodeToString[q.rcode])
		}
	}
	return took, nil
}

// BenchmarkBuild: the index of BENCH_SERVICES (10,000) services × 10
// endpoints, which every sync builds anew.
func BenchmarkBuild(b *testing.B) {
	st := kernelbench.Big(kernelbench.Services(b), kernelbench.EndpointsPerService)
	b.ReportAllocs()
	for b.Loop() {
		Build(st, benchZones)
	}
}
