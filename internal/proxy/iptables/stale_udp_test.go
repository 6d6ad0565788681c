package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// recordingConntrack records each batch of UDP flows it is asked to
// forget, and the undiverted portals apart, and fails every batch with err
// when set.
type recordingConntrack struct {
	mu         sync.Mutex
	batches    [][]string // "vip -> ep", sorted within a batch
	undiverted [][]string // "proto vip:port", sorted within a batch
	err        error
}

func (c *recordingConntrack) Clear(_ context.Context, f Forget) error {
	b := make([]string, 0, len(f.UDP))
	for _, fl := range f.UDP {
		b = append(b, fl.VIP.String()+" -> "+fl.Endpoint.String())
	}
	slices.Sort(b)
	var u []string
	for _, p := range f.Undiverted {
		u = append(u, string(p.Protocol)+" "+p.Addr.String())
	}
	slices.Sort(u)
	c.mu.Lock()
	if len(b) > 0 {
		c.batches = append(c.batches, b)
	}
	if len(u) > 0 {
		c.undiverted = append(c.undiverted, u)
	}
	c.mu.Unlock()
	return c.err
}

// takeUndiverted returns the undiverted batches since the last take.
func (c *recordingConntrack) takeUndiverted() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.undiverted
	c.undiverted = nil
	return out
}

// takeBatches returns the batches since the last take.
func (c *recordingConntrack) takeBatches() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.batches
	c.batches = nil
	return out
}

// take returns the flows of every batch since the last take, sorted.
func (c *recordingConntrack) take() []string {
	out := slices.Concat(c.takeBatches()...)
	slices.Sort(out)
	return out
}

// bigUDP is one UDP service port of 10.96.0.53:53 with the endpoints
// 10.0.x.y:53 numbered from..to-1, at external IP 192.0.2.53 too.
func bigUDP(from, to int) *model.ServicePort {
	p := &model.ServicePort{
		Key:         model.PortKey{Cluster: "alpha", Namespace: "kube-system", Name: "dns", Protocol: model.UDP},
		ClusterIP:   netip.MustParseAddr("10.96.0.53"),
		ExternalIPs: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Port:        53,
	}
	for i := from; i < to; i++ {
		p.Endpoints = append(p.Endpoints, model.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 53)})
	}
	return p
}

func udpState(p *model.ServicePort) *model.State {
	return &model.State{Clusters: []*model.ClusterState{{
		Name: "alpha", Synced: true, Ports: map[model.PortKey]*model.ServicePort{p.Key: p},
		ServiceCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		AllowExternalIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	}}}
}

// TestStaleUDPFlowsLargeService: of a UDP service with 20,000 endpoints,
// the flows to exactly the removed ones are forgotten, at each address of
// the port, and none to the endpoints that stay.
func TestStaleUDPFlowsLargeService(t *testing.T) {
	ct := &recordingConntrack{}
	p := New(Options{Runner: NewFake(), MasqueradeMark: 0x100000, Conntrack: ct})
	mustSync(t, p, udpState(bigUDP(0, 20000)), true)
	ct.take()

	mustSync(t, p, udpState(bigUDP(100, 20000)), false)
	var want []string
	for i := 0; i < 100; i++ {
		ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 53)
		want = append(want, "10.96.0.53:53 -> "+ep.String(), "192.0.2.53:53 -> "+ep.String())
	}
	slices.Sort(want)
	batches := ct.takeBatches()
	if len(batches) != 1 {
		t.Fatalf("%d batches, want the sync's flows in one", len(batches))
	}
	if got := batches[0]; !slices.Equal(got, want) {
		t.Fatalf("forgot %d flows (first %q), want the %d to the 100 removed endpoints", len(got), got[:min(len(got), 3)], len(want))
	}

	// The service goes: every flow of it is forgotten.
	mustSync(t, p, udpState(&model.ServicePort{Key: model.PortKey{Cluster: "alpha", Name: "other", Protocol: model.TCP},
		ClusterIP: netip.MustParseAddr("10.96.0.1"), Port: 80}), false)
	if got := ct.take(); len(got) != 2*19900 {
		t.Fatalf("forgot %d flows after the service went, want %d", len(got), 2*19900)
	}
}

// BenchmarkStaleUDPFlows: one endpoint leaves a UDP service of n; the
// time per sync grows with n, not with n squared (compare the sizes).
func BenchmarkStaleUDPFlows(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := New(Options{Runner: NewFake(), MasqueradeMark: 0x100000, Conntrack: &recordingConntrack{}})
			all, less := udpState(bigUDP(0, n)), udpState(bigUDP(1, n))
			if err := p.Sync(b.Context(), all, true); err != nil {
				b.Fatal(err)
			}
			p.opt.Conntrack = discardConntrack{}
			b.ResetTimer()
			for i := range b.N {
				st := less
				if i%2 == 1 {
					st = all
				}
				if err := p.Sync(b.Context(), st, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type discardConntrack struct{}

func (discardConntrack) Clear(context.Context, Forget) error { return nil }

// BenchmarkHeapAtDefaultLimits reports the live heap of a Proxier (over
// the fake runner) that programmed 20,000 services of 10 endpoints: one
// cluster at the default limits. The model's benchmark of the same name
// gives the rest; together they size MemoryMax=.
func BenchmarkHeapAtDefaultLimits(b *testing.B) {
	for range b.N {
		st := manyServices(20000, 10)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		p := New(Options{Runner: NewFake(), MasqueradeMark: 0x100000})
		if err := p.Sync(b.Context(), st, true); err != nil {
			b.Fatal(err)
		}
		p.opt.Runner = nil // the fake's copy of the rules is the kernel's, not ours
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		// The most the heap held at once, garbage included: what the
		// process asks of the system at its peak.
		b.ReportMetric(float64(after.HeapSys)/(1<<20), "heap-sys-MiB")
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "alloc-MiB")
		runtime.KeepAlive(p)
	}
}

// manyServices is n TCP services of m endpoints each, in one cluster.
func manyServices(n, m int) *model.State {
	cs := &model.ClusterState{Name: "bench", Synced: true, Ports: map[model.PortKey]*model.ServicePort{},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}
	for i := range n {
		k := model.PortKey{Cluster: "bench", Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), Port: "http", Protocol: model.TCP}
		p := &model.ServicePort{Key: k, ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Port: 80}
		for j := range m {
			x := i*m + j
			p.Endpoints = append(p.Endpoints, model.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(x >> 16), byte(x >> 8), byte(x)}), 8080)})
		}
		cs.Ports[k] = p
	}
	return &model.State{Clusters: []*model.ClusterState{cs}}
}
