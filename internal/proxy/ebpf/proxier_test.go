package ebpf

import (
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// fakeProxier syncs into f4 and f6 as it would into the kernel's maps.
func fakeProxier(f4, f6 *fakeMaps) *Proxier {
	return &Proxier{log: slog.New(slog.DiscardHandler), w: map[bool]*writer{false: newWriter(f4), true: newWriter(f6)}}
}

func svc(addr string, port uint16, proto uint8) svcID {
	return svcID{addr: netip.MustParseAddr(addr), port: port, proto: proto}
}

func bes(proto uint8, eps ...string) []beKey {
	var out []beKey
	for _, e := range eps {
		ap := netip.MustParseAddrPort(e)
		out = append(out, beKey{addr: ap.Addr(), port: ap.Port(), proto: proto})
	}
	return out
}

func wantMaps(t *testing.T, f *fakeMaps, want map[svcID][]beKey) {
	t.Helper()
	if f.broken != nil {
		t.Fatal(f.broken)
	}
	if got := f.resolved(); !reflect.DeepEqual(got, want) {
		t.Fatalf("the maps resolve to\n%v\nwant\n%v", got, want)
	}
}

// TestSync: ports of both families at their VIP and external IPs, partial
// syncs that change, add and remove ports, and a full sync that finds
// the maps as they were.
func TestSync(t *testing.T) {
	f4, f6 := newFakeMaps(), newFakeMaps()
	p := fakeProxier(f4, f6)
	web := modeltest.Svc("a", "default", "web", "", model.TCP, "10.96.0.10", 80, "10.1.0.1:8080", "10.1.0.2:8080")
	web.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	dns := modeltest.Svc("a", "default", "dns", "", model.UDP, "10.96.0.53", 53)
	web6 := modeltest.Svc("a", "default", "web", "", model.TCP, "fd00:96::10", 80, "[fd00::1]:8080")
	st := func(ports ...*model.ServicePort) *model.State {
		return modeltest.State(modeltest.Cluster("a", true, []string{"10.96.0.0/16", "fd00:96::/112"}, ports...))
	}
	if err := p.Sync(t.Context(), st(web, dns, web6), false); err != nil {
		t.Fatal(err)
	}
	webBes := bes(6, "10.1.0.1:8080", "10.1.0.2:8080")
	wantMaps(t, f4, map[svcID][]beKey{svc("10.96.0.10", 80, 6): webBes, svc("192.0.2.10", 80, 6): webBes, svc("10.96.0.53", 53, 17): nil})
	wantMaps(t, f6, map[svcID][]beKey{svc("fd00:96::10", 80, 6): bes(6, "[fd00::1]:8080")})

	// A partial sync writes only what changed.
	ops := f4.ops
	dns2 := modeltest.WithEndpoints(dns, "10.1.0.9:5353")
	if err := p.Sync(t.Context(), st(web, dns2, web6), false); err != nil {
		t.Fatal(err)
	}
	if n := f4.ops - ops; n != 3 {
		t.Errorf("giving one port an endpoint took %d writes, want 3 (backend, slot, count)", n)
	}
	web2 := modeltest.WithEndpoints(web, "10.1.0.2:8080")
	web2.ExternalIPs = nil
	if err := p.Sync(t.Context(), st(web2, web6), false); err != nil {
		t.Fatal(err)
	}
	wantMaps(t, f4, map[svcID][]beKey{svc("10.96.0.10", 80, 6): bes(6, "10.1.0.2:8080")})
	if len(f4.bes) != 1 {
		t.Errorf("backends left: %v", f4.bes)
	}

	// Full: nothing to write.
	ops = f4.ops + f6.ops
	if err := p.Sync(t.Context(), st(web2, web6), true); err != nil {
		t.Fatal(err)
	}
	if n := f4.ops + f6.ops - ops; n != 0 {
		t.Errorf("a full sync of what the maps hold wrote %d times", n)
	}
}

// TestSyncRestart: a new daemon over the maps an earlier one pinned keeps
// the entries of a cluster it has not synced, and removes the others'
// that the state no longer has.
func TestSyncRestart(t *testing.T) {
	f4, f6 := newFakeMaps(), newFakeMaps()
	a := modeltest.Svc("a", "default", "web", "", model.TCP, "10.96.0.10", 80, "10.1.0.1:8080")
	aOld := modeltest.Svc("a", "default", "old", "", model.TCP, "10.96.0.11", 80, "10.1.0.1:8080")
	b := modeltest.Svc("b", "default", "web", "", model.TCP, "10.97.0.10", 80, "10.2.0.1:8080")
	both := modeltest.State(
		modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, a, aOld),
		modeltest.Cluster("b", true, []string{"10.97.0.0/16"}, b),
	)
	if err := fakeProxier(f4, f6).Sync(t.Context(), both, true); err != nil {
		t.Fatal(err)
	}
	p := fakeProxier(f4, f6)
	restarted := modeltest.State(
		modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, a),
		modeltest.Cluster("b", false, []string{"10.97.0.0/16"}),
	)
	if err := p.Sync(t.Context(), restarted, false); err != nil {
		t.Fatal(err)
	}
	wantMaps(t, f4, map[svcID][]beKey{svc("10.96.0.10", 80, 6): bes(6, "10.1.0.1:8080"), svc("10.97.0.10", 80, 6): bes(6, "10.2.0.1:8080")})
	// b syncs, without its port: a partial sync is asked for, and the
	// port an earlier run wrote for b goes all the same.
	synced := modeltest.State(
		modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, a),
		modeltest.Cluster("b", true, []string{"10.97.0.0/16"}),
	)
	if err := p.Sync(t.Context(), synced, false); err != nil {
		t.Fatal(err)
	}
	wantMaps(t, f4, map[svcID][]beKey{svc("10.96.0.10", 80, 6): bes(6, "10.1.0.1:8080")})
	if len(f4.bes) != 1 {
		t.Errorf("backends left: %v", f4.bes)
	}
}

// TestSyncFailure: a failed write fails the sync, and the next one,
// full, ends where the state says.
func TestSyncFailure(t *testing.T) {
	f4, f6 := newFakeMaps(), newFakeMaps()
	p := fakeProxier(f4, f6)
	web := modeltest.Svc("a", "default", "web", "", model.TCP, "10.96.0.10", 80, "10.1.0.1:8080", "10.1.0.2:8080")
	st := modeltest.State(modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, web))
	f4.failAt = 2
	if err := p.Sync(t.Context(), st, false); !errors.Is(err, errInjected) {
		t.Fatalf("Sync: %v, want the injected failure", err)
	}
	if p.applied != nil {
		t.Fatal("a failed sync left the next one partial")
	}
	if err := p.Sync(t.Context(), st, false); err != nil {
		t.Fatal(err)
	}
	wantMaps(t, f4, map[svcID][]beKey{svc("10.96.0.10", 80, 6): bes(6, "10.1.0.1:8080", "10.1.0.2:8080")})
	if len(f4.bes) != 2 {
		t.Errorf("backends: %v", f4.bes)
	}
}
