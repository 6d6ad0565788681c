//go:build kernel

// Benchmarks against the real kernel. They program iptables in the network
// namespace they run in, so `make bench` runs them inside a throw-away one:
//
//	ip netns add b && ip netns exec b go test -tags kernel -bench . ./internal/proxy/iptables/
package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// bigState is n services with m endpoints each, in one cluster.
func bigState(n, m int) *model.State {
	cs := &model.ClusterState{
		Name: "bench", Synced: true,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		Ports:        map[model.PortKey]*model.ServicePort{},
	}
	for i := 0; i < n; i++ {
		k := model.PortKey{Cluster: "bench", Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), Port: "http", Protocol: model.TCP}
		p := &model.ServicePort{Key: k, ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Port: 80}
		for j := 0; j < m; j++ {
			x := i*m + j
			p.Endpoints = append(p.Endpoints, model.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(x >> 8), byte(x)}), 8080)})
		}
		cs.Ports[k] = p
	}
	return &model.State{Clusters: []*model.ClusterState{cs}}
}

func kernelProxier(b *testing.B) *Proxier {
	r, err := NewRunner(false)
	if err != nil {
		b.Skip(err)
	}
	return New(Options{Runner: r, MasqueradeMark: 0x100000})
}

// syncedKernelProxier has st programmed, and is cleaned up after the
// benchmark's timer stops.
func syncedKernelProxier(b *testing.B, st *model.State) *Proxier {
	p := kernelProxier(b)
	if err := p.Sync(context.Background(), st, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cleanupKernel(b, p) })
	return p
}

func cleanupKernel(b *testing.B, p *Proxier) {
	if err := p.Cleanup(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkKernelFullSync10k: the first sync of 10,000 services x 10
// endpoints (kube-proxy's first restore on the nf_tables backend did not
// finish in 15 minutes at this size).
func BenchmarkKernelFullSync10k(b *testing.B) {
	st := bigState(10000, 10)
	for i := 0; i < b.N; i++ {
		p := kernelProxier(b)
		if err := p.Sync(context.Background(), st, true); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cleanupKernel(b, p)
		b.StartTimer()
	}
}

// BenchmarkKernelOneChange10k: one service's endpoints change among 10,000.
func BenchmarkKernelOneChange10k(b *testing.B) {
	st := bigState(10000, 10)
	p := syncedKernelProxier(b, st)
	ctx := context.Background()
	cs := st.Clusters[0]
	k := model.PortKey{Cluster: "bench", Namespace: "ns", Name: "svc-42", Port: "http", Protocol: model.TCP}
	orig := cs.Ports[k]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		np := *orig
		np.Endpoints = append([]model.Endpoint(nil), orig.Endpoints[:1+i%9]...)
		cs.Ports[k] = &np
		if err := p.Sync(ctx, st, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKernelAddService10k: one service appears among 10,000.
func BenchmarkKernelAddService10k(b *testing.B) {
	st := bigState(10000, 10)
	p := syncedKernelProxier(b, st)
	ctx := context.Background()
	cs := st.Clusters[0]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := model.PortKey{Cluster: "bench", Namespace: "ns", Name: fmt.Sprintf("new-%d", i), Port: "http", Protocol: model.TCP}
		cs.Ports[k] = &model.ServicePort{Key: k, ClusterIP: netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), Port: 80,
			Endpoints: []model.Endpoint{{Addr: netip.MustParseAddrPort("10.245.0.1:8080")}}}
		if err := p.Sync(ctx, st, false); err != nil {
			b.Fatal(err)
		}
	}
}
