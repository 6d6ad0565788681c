//go:build kernel

package ebpf

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestKernelScale times a cold sync of KO_EBPF_SCALE services x 10
// endpoints and single endpoint changes (partial syncs) against the real
// maps; skipped unless the variable is set. It asserts nothing; `make
// bench` measures the same and more (kernel_bench_test.go).
func TestKernelScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("KO_EBPF_SCALE"))
	if n == 0 {
		t.Skip("KO_EBPF_SCALE is not set")
	}
	l := newLab(t)
	p := l.proxier()
	c := modeltest.Cluster("a", true, []string{"10.96.0.0/12"})
	var keys []model.PortKey
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		var eps []string
		for e := range 10 {
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d:8080", 128+(i>>12), (i>>4)&0xff, (i&0xf)*10+e))
		}
		sp := modeltest.Svc("a", "ns", fmt.Sprint("svc", i), "", model.TCP, ip.String(), 80, eps...)
		c.Ports[sp.Key] = sp
		keys = append(keys, sp.Key)
	}
	st := modeltest.State(c)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	mustSync(t, p, st, true)
	cold := time.Since(start)
	runtime.ReadMemStats(&m1)
	var changes []time.Duration
	for i := range 20 {
		k := keys[i*97%len(keys)]
		c.Ports[k] = modeltest.WithEndpoints(c.Ports[k], fmt.Sprintf("10.200.0.%d:8080", i))
		start := time.Now()
		mustSync(t, p, st, false)
		changes = append(changes, time.Since(start))
	}
	start = time.Now()
	mustSync(t, p, st, true)
	full := time.Since(start)
	t.Logf("%d services x 10 endpoints: cold sync %v (%d MiB allocated), one change %v (median of 20), full resync with nothing to write %v",
		n, cold.Round(time.Millisecond), (m1.TotalAlloc-m0.TotalAlloc)>>20, median(changes), full.Round(time.Millisecond))
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
