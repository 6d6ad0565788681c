//go:build kernel

package ebpf

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestKernelStateAtTheLimitsFits: maps sized (capacities) for cluster a
// limited to 1,024 endpoint entries and cluster b to 2 (its one service
// and slice) take the largest states a can be handed, each replaced whole
// in one sync (old and new at once): 1,023 endpoints of one port (2,047
// backends with b's, of 2,052), then one endpoint reached at 1,023
// addresses (4,090 slots and b's 2, of 4,104). No sync fails, and b's
// service answers throughout. Maps 4 and 8 entries smaller fail it (tried
// by hand: "key too big for map").
func TestKernelStateAtTheLimitsFits(t *testing.T) {
	l := newLab(t)
	p := New(Options{PinDir: l.pinDir, Cgroup: l.cgroup, NetnsCookie: l.cookie, Endpoints: minEndpointEntries + 2,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	t.Cleanup(func() {
		if err := p.Cleanup(t.Context()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	other := modeltest.Svc("b", "default", "web", "", model.TCP, "10.97.0.10", 80, l.backends(10, 1, 8080)...)
	eps := func(first int) []string {
		var out []string
		for i := range minEndpointEntries - 1 {
			out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(first), byte(i >> 8), byte(i)}), 8080).String())
		}
		return out
	}
	many := modeltest.Svc("a", "default", "many", "", model.TCP, vip, 80, eps(200)...)
	state := func(a *model.ServicePort) *model.State {
		return modeltest.State(
			modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, a),
			modeltest.Cluster("b", true, []string{"10.97.0.0/16"}, other))
	}
	c := l.client()
	check := func(when string) {
		t.Helper()
		if r := c.do("tcp 10.97.0.10:80"); r.Err != "" {
			t.Fatalf("cluster b's service %s: %s", when, r.Err)
		}
	}
	mustSync(t, p, state(many), true)
	check("with 1,023 endpoints of cluster a")
	mustSync(t, p, state(modeltest.WithEndpoints(many, eps(201)...)), false)
	check("after they were replaced whole")

	wide := modeltest.Svc("a", "default", "wide", "", model.TCP, vip, 80, "10.202.0.1:8080")
	ext := func(first int) []netip.Addr {
		var out []netip.Addr
		for i := range minEndpointEntries - 2 {
			out = append(out, netip.AddrFrom4([4]byte{198, byte(first), byte(i >> 8), byte(i)}))
		}
		return out
	}
	wide.ExternalIPs = ext(18)
	mustSync(t, p, state(wide), false)
	check("with one endpoint at 1,023 addresses")
	moved := *wide
	moved.ExternalIPs = ext(19)
	mustSync(t, p, state(&moved), false)
	check("after the addresses were replaced whole")
	dp, err := p.Datapath(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"ko_svc4": 2*(minEndpointEntries-1) + 2, "ko_be4": 2} // and cluster b's
	for _, m := range dp.Maps {
		t.Logf("%s: %d of %d", m.Name, m.Entries, m.Capacity)
		if w, ok := want[m.Name]; ok && m.Entries != w {
			t.Errorf("%s holds %d entries, want %d", m.Name, m.Entries, w)
		}
	}
}

// TestKernelResize: a reload that adds a cluster grows the maps in the
// running daemon (Resize), as a restart would: the next sync loads maps
// of the new size beside the pinned ones, copies them, fills them and
// moves the hooks to them, with a connect loop running and none failing;
// the new cluster's service then fits.
func TestKernelResize(t *testing.T) {
	l := newLab(t)
	p := l.proxier()
	p.opt.Endpoints = minEndpointEntries
	bes := l.backends(71, 2, 8080)
	web := modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)
	mustSync(t, p, state(web), true)
	c := l.client()
	done := make(chan result)
	go func() { done <- c.do("loop " + vip + ":80 1s") }()
	time.Sleep(200 * time.Millisecond)
	cfg := &config.Config{Clusters: []config.Cluster{{Name: "a", MaxEndpoints: minEndpointEntries}, {Name: "b", MaxEndpoints: 3 * minEndpointEntries}}}
	if err := p.Resize(cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	var eps []string
	for i := range 2 * minEndpointEntries {
		eps = append(eps, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 210, byte(i >> 8), byte(i)}), 8080).String())
	}
	big := modeltest.Svc("b", "default", "big", "", model.TCP, "10.97.0.10", 80, eps...)
	mustSync(t, p, modeltest.State(
		modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, web),
		modeltest.Cluster("b", true, []string{"10.97.0.0/16"}, big)), false)
	r := <-done
	t.Logf("%d connects across the resize, %d failed; reached %v", r.Count, r.Failed, r.Backends)
	if r.Failed > 0 || r.Count == 0 {
		t.Errorf("%d of %d connects failed across the resize, the first: %s", r.Failed, r.Count, r.Err)
	}
	if got := attached(t, l.cgroup); got != len(hooks) {
		t.Errorf("%d programs attached after the resize, want %d", got, len(hooks))
	}
	be, slots := capacities(4 * minEndpointEntries)
	for _, name := range []string{"ko_be4", "ko_svc4"} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(l.pinDir, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]uint32{"ko_be4": be, "ko_svc4": slots}[name]
		if m.MaxEntries() != want {
			t.Errorf("pinned %s holds %d entries, want %d", name, m.MaxEntries(), want)
		}
		m.Close()
	}
}
