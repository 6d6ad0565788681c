package daemon

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
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
