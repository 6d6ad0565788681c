package kernelbench

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// The large state is apart from the kernel benchmarks (Linux's), so that
// benchmarks elsewhere of the same load build on any system.

// Services is the number of services of the large state, 10 endpoints
// each: 10,000, or BENCH_SERVICES to try the harness at a smaller size.
func Services(b *testing.B) int {
	s := os.Getenv("BENCH_SERVICES")
	if s == "" {
		return 10000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 || n > 65536 {
		b.Fatalf("BENCH_SERVICES=%q: want a number from 10 to 65536", s)
	}
	return n
}

// EndpointsPerService is the m of Big(n, m) in these benchmarks.
const EndpointsPerService = 10

const cluster = "bench"

// Big is n services with m endpoints each, in one cluster whose range is
// 10.96.0.0/12: service i is 10.96.0.0 + i, port 80, its endpoints port
// 8080 in 10.244.0.0/16.
func Big(n, m int) *model.State {
	cs := &model.ClusterState{
		Name: cluster, Synced: true,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		Ports:        map[model.PortKey]*model.ServicePort{},
	}
	for i := 0; i < n; i++ {
		k := portKey(fmt.Sprintf("svc-%d", i))
		p := &model.ServicePort{Key: k, ClusterIP: clusterIP(i), Port: 80}
		for j := 0; j < m; j++ {
			x := i*m + j
			p.Endpoints = append(p.Endpoints, model.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(x >> 8), byte(x)}), 8080)})
		}
		cs.Ports[k] = p
	}
	return &model.State{Clusters: []*model.ClusterState{cs}}
}

func portKey(name string) model.PortKey {
	return model.PortKey{Cluster: cluster, Namespace: "ns", Name: name, Port: "http", Protocol: model.TCP}
}

func clusterIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
}
