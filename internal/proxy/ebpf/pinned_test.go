package ebpf

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestPinnedServices: the maps read back are each service head with the
// backends its slots name, in slot order; a slot or backend that is
// missing shows as such, not as another service's.
func TestPinnedServices(t *testing.T) {
	f := newFakeMaps()
	w := newWriter(f)
	web := svcID{addr: netip.MustParseAddr("10.96.0.10"), port: 80, proto: 6}
	dns := svcID{addr: netip.MustParseAddr("10.96.0.10"), port: 53, proto: 17}
	a := beKey{addr: netip.MustParseAddr("10.1.0.1"), port: 8080, proto: 6}
	b := beKey{addr: netip.MustParseAddr("10.1.0.2"), port: 8080, proto: 6}
	if err := w.setService(web, svcHead{owner: 7, affinity: 60}, []beKey{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := w.setService(dns, svcHead{owner: 7}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	idB := f.svcs[slotKey{web, 2}].BackendId
	delete(f.bes, idB)
	got := pinnedServices(f.svcs, f.bes)
	want := map[netip.AddrPort]PinnedService{
		netip.MustParseAddrPort("10.96.0.10:80"): {Target: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: model.TCP, Owner: 7, AffinitySeconds: 60,
			Backends: []PinnedBackend{{Slot: 1, ID: f.svcs[slotKey{web, 1}].BackendId, Addr: netip.MustParseAddrPort("10.1.0.1:8080")}, {Slot: 2, ID: idB}}},
		netip.MustParseAddrPort("10.96.0.10:53"): {Target: netip.MustParseAddrPort("10.96.0.10:53"), Protocol: model.UDP, Owner: 7},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, s := range got {
		if !reflect.DeepEqual(s, want[s.Target]) {
			t.Errorf("got %+v, want %+v", s, want[s.Target])
		}
	}
}
