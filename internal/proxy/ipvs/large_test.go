package ipvs

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// manyEndpoints are the endpoints 10.0.x.y:8080 numbered from..to-1.
func manyEndpoints(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 8080).String())
	}
	return out
}

// TestLargeService: a service of 20,000 endpoints, of which half are
// replaced: the new ones are added, the old ones drained, and nothing
// else is touched.
func TestLargeService(t *testing.T) {
	e := newEnv(t)
	big := svc("alpha", "default", "big", "", model.TCP, "10.96.0.10", 80, manyEndpoints(0, 20000)...)
	e.sync(state(cluster("alpha", true, alphaCIDRs, big)), true)
	e.k.TakeOps()
	e.sync(state(cluster("alpha", true, alphaCIDRs, withEndpoints(big, manyEndpoints(10000, 30000)...))), false)
	adds, dels := 0, 0
	for _, op := range e.k.TakeOps() {
		switch {
		case len(op) > 8 && op[:8] == "add-dest":
			adds++
		case len(op) > 8 && op[:8] == "del-dest":
			dels++
		default:
			t.Fatalf("unexpected operation %q", op)
		}
	}
	// Without connections, a destination no longer wanted goes at once.
	if adds != 10000 || dels != 10000 {
		t.Fatalf("%d destinations added and %d deleted, want 10000 each", adds, dels)
	}
	vss, err := e.k.List()
	if err != nil || len(vss) != 1 || len(vss[0].Destinations) != 20000 {
		t.Fatalf("kernel holds %d virtual servers (%v)", len(vss), err)
	}
}

// BenchmarkSyncLargeService: one endpoint leaves a service of n and comes
// back. The time per sync grows with n, not with n squared.
func BenchmarkSyncLargeService(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := newEnv(&testing.T{})
			all := svc("alpha", "default", "big", "", model.UDP, "10.96.0.10", 80, manyEndpoints(0, n)...)
			less := withEndpoints(all, manyEndpoints(1, n)...)
			sts := []*model.State{state(cluster("alpha", true, alphaCIDRs, less)), state(cluster("alpha", true, alphaCIDRs, all))}
			if err := e.p.Sync(b.Context(), sts[1], true); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				if err := e.p.Sync(b.Context(), sts[i%2], false); err != nil {
					b.Fatal(err)
				}
				e.k.TakeOps()
			}
		})
	}
}
