package daemon

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
)

// TestProbeRepairs: a flushed nat table is found by the next probe, which
// asks for one full sync (counted once, however many probes see it before
// it runs); that sync puts every rule back.
func TestProbeRepairs(t *testing.T) {
	d, fake := testDaemon(t)
	ctx := context.Background()
	d.store.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "alpha", ServiceCIDRs: []netip.Prefix{alphaCIDR}}, Generation: 1}})
	d.store.SetSynced("alpha")
	d.store.UpsertService("alpha", service("web", "10.96.0.10"))
	d.store.UpsertSlice("alpha", slice("web", time.Now(), "10.1.0.1"))
	if err := d.loop.sync(ctx, syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
	before := fake.Dump()
	const repairs = "kube_outpost_sync_proxy_rules_repairs_total"
	d.probeOnce(ctx)
	if got := value(t, d, repairs); got != 0 {
		t.Fatalf("%s = %v with every rule in place", repairs, got)
	}

	// iptables -t nat -F, as a firewall reload does.
	var flush string
	for _, ch := range fake.Chains("nat") {
		flush += "-F " + ch + "\n"
	}
	if err := fake.Restore(ctx, []byte("*nat\n"+flush+"COMMIT\n")); err != nil {
		t.Fatal(err)
	}
	d.probeOnce(ctx)
	d.probeOnce(ctx) // still flushed: the same repair, not a second one
	if got := value(t, d, repairs); got != 1 {
		t.Fatalf("%s = %v after a flush, want 1", repairs, got)
	}
	// The sync the repair asked for, as the runner would run it: not a
	// periodic one, yet full.
	if err := d.loop.sync(ctx, syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
	if after := fake.Dump(); after != before {
		t.Errorf("after the repair:\n%s\nwant:\n%s", after, before)
	}
	d.probeOnce(ctx)
	if got := value(t, d, repairs); got != 1 {
		t.Errorf("%s = %v after the repair, want still 1", repairs, got)
	}
}

// syncingProber reports everything gone, the way a probe reads a kernel
// that a sync is rewriting, and has a sync start or end while it reads.
type syncingProber struct {
	proxy.Backend
	during func()
}

func (p syncingProber) Missing(context.Context) ([]string, error) {
	p.during()
	return []string{"nat table: chain OUTPOST-CANARY"}, nil
}

// TestProbeDuringSyncSaysNothing: a probe that reads the kernel while a
// sync runs, or across a sync's start or end, neither counts a repair nor
// asks for one: the sync may be writing what it finds missing, and a
// repair's own sync would otherwise count and run twice.
func TestProbeDuringSyncSaysNothing(t *testing.T) {
	d, _ := testDaemon(t)
	ctx := context.Background()
	const repairs = "kube_outpost_sync_proxy_rules_repairs_total"
	d.backendsMu.Lock()
	d.backends = []proxy.Backend{syncingProber{during: func() {}}}
	d.backendsMu.Unlock()

	d.loop.edges.Add(1) // a sync runs
	if d.probeOnce(ctx) || value(t, d, repairs) != 0 || d.loop.repair.Load() {
		t.Fatal("a probe during a sync asked for a repair")
	}
	d.loop.edges.Add(1) // it ended

	d.backendsMu.Lock()
	d.backends = []proxy.Backend{syncingProber{during: func() { d.loop.edges.Add(2) }}}
	d.backendsMu.Unlock()
	if d.probeOnce(ctx) || value(t, d, repairs) != 0 || d.loop.repair.Load() {
		t.Fatal("a probe across a whole sync asked for a repair")
	}

	d.backendsMu.Lock()
	d.backends = []proxy.Backend{syncingProber{during: func() {}}}
	d.backendsMu.Unlock()
	if !d.probeOnce(ctx) || value(t, d, repairs) != 1 || !d.loop.repair.Load() {
		t.Fatalf("a probe between syncs that finds the canary gone: %s = %v, repair asked %v", repairs, value(t, d, repairs), d.loop.repair.Load())
	}
}
