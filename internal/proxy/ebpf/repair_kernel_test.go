//go:build kernel

package ebpf

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestKernelRepairDetached: a hook detached behind the daemon's back
// (what `bpftool link detach` does) and a config map rewritten are found
// by the probe (Missing), the service stops translating meanwhile, and a
// full sync attaches the hook again and rewrites the map; the probe then
// finds nothing.
func TestKernelRepairDetached(t *testing.T) {
	l := newLab(t)
	p := l.proxier()
	st := modeltest.State(modeltest.Cluster("a", true, []string{"10.96.0.0/16"},
		modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, l.backends(51, 1, 8080)...)))
	mustSync(t, p, st, true)
	c := l.client()
	if r := c.do("tcp " + vip + ":80"); r.Err != "" {
		t.Fatalf("before: %s", r.Err)
	}
	if got, err := p.Missing(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("Missing before anything was removed: %q, %v", got, err)
	}
	pinned, err := link.LoadPinnedLink(linkPin(l.pinDir, "connect4"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pinned.Detach(); err != nil {
		t.Fatal(err)
	}
	pinned.Close()
	if err := p.dp.objs.KoConfig.Put(uint32(0), sockConfig{NetnsCookie: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := p.Missing(t.Context())
	if want := []string{"hook connect4", "the namespace in ko_config"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Missing: %q, %v; want %q", got, err, want)
	}
	if r := c.do("tcp " + vip + ":80"); r.Err == "" {
		t.Fatalf("a connect was translated with connect4 detached: reached %v", r.Backends)
	}
	mustSync(t, p, st, false)
	if got, _ := p.Missing(t.Context()); len(got) != 2 {
		t.Errorf("a partial sync repaired %q; the repair is the full sync's", got)
	}
	mustSync(t, p, st, true)
	if got, err := p.Missing(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("Missing after the full sync: %q, %v", got, err)
	}
	if r := c.do("tcp " + vip + ":80"); r.Err != "" {
		t.Errorf("after the repair: %s", r.Err)
	}
	if n := attached(t, l.cgroup); n != len(hooks) {
		t.Errorf("%d programs attached after the repair, want %d", n, len(hooks))
	}
}
