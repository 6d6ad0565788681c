package ebpf

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
)

func randomEndpoints(r *rand.Rand) []beKey {
	n := r.IntN(6)
	seen := map[beKey]bool{}
	var out []beKey
	for range n {
		b := beKey{addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(r.IntN(8))}), port: 8080, proto: 6}
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out
}

// TestWriterOrder: random services grow, shrink, refuse and go, and no
// single map write lets a connect() find a count over a missing slot or
// a slot over a missing backend; at the end the maps hold exactly the
// desired services, and no backend nobody names.
func TestWriterOrder(t *testing.T) {
	for seed := range uint64(20) {
		writerOrder(t, seed)
	}
}

func writerOrder(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 2))
	f := newFakeMaps()
	w := newWriter(f)
	want := map[svcID][]beKey{}
	for step := range 2000 {
		s := svcID{addr: netip.AddrFrom4([4]byte{10, 96, 0, byte(r.IntN(10))}), port: 80, proto: 6}
		if r.IntN(5) == 0 {
			w.deleteService(s)
			delete(want, s)
		} else {
			eps := randomEndpoints(r)
			if err := w.setService(s, svcHead{owner: 7}, eps); err != nil {
				t.Fatal(err)
			}
			want[s] = eps
		}
		// Some steps flush alone; others plan several services, or one
		// service several times, before a flush.
		if r.IntN(3) == 0 {
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
		}
		if f.broken != nil {
			t.Fatalf("seed %d, step %d: %v", seed, step, f.broken)
		}
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	if got := f.resolved(); !reflect.DeepEqual(got, want) {
		t.Errorf("the maps resolve to\n%v\nwant\n%v", got, want)
	}
	used := map[uint32]bool{}
	for k, v := range f.svcs {
		if k.slot != 0 {
			used[v.BackendId] = true
		}
	}
	for id := range f.bes {
		if !used[id] {
			t.Errorf("backend %d is named by no slot", id)
		}
	}
}

// TestWriterRecovers: a write fails midway; load takes the kernel's maps
// as they are, and the next writes and collect end in the desired state
// with nothing left over, never exposing half a service.
func TestWriterRecovers(t *testing.T) {
	for failAt := 1; failAt < 40; failAt++ {
		r := rand.New(rand.NewPCG(uint64(failAt), 3))
		f := newFakeMaps()
		w := newWriter(f)
		want := map[svcID][]beKey{}
		f.failAt = failAt
		failed := false
		for range 12 {
			s := svcID{addr: netip.AddrFrom4([4]byte{10, 96, 0, byte(r.IntN(3))}), port: 53, proto: 17}
			eps := randomEndpoints(r)
			want[s] = eps
			if err := w.setService(s, svcHead{owner: 1}, eps); err != nil {
				t.Fatal(err)
			}
			if err := w.flush(); err != nil {
				if !errors.Is(err, errInjected) {
					t.Fatal(err)
				}
				failed = true
				if err := w.load(); err != nil {
					t.Fatal(err)
				}
				if err := w.setService(s, svcHead{owner: 1}, eps); err != nil {
					t.Fatal(err)
				}
				if err := w.flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		w.collect()
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		if f.broken != nil {
			t.Fatalf("fail at %d: %v", failAt, f.broken)
		}
		if got := f.resolved(); !reflect.DeepEqual(got, want) {
			t.Errorf("fail at %d (failed: %v): the maps resolve to\n%v\nwant\n%v", failAt, failed, got, want)
		}
		if len(f.bes) != len(w.byID) {
			t.Errorf("fail at %d: %d backends in the maps, the writer knows %d", failAt, len(f.bes), len(w.byID))
		}
	}
}

// TestWriterGone: the endpoints a UDP service loses, by shrinking or by
// going, are the flows whose sockets are to be destroyed; TCP's are not.
func TestWriterGone(t *testing.T) {
	w := newWriter(newFakeMaps())
	a, b := beKey{addr: netip.MustParseAddr("10.1.0.1"), port: 53, proto: 17}, beKey{addr: netip.MustParseAddr("10.1.0.2"), port: 53, proto: 17}
	dns := svcID{addr: netip.MustParseAddr("10.96.0.10"), port: 53, proto: 17}
	web := svcID{addr: netip.MustParseAddr("10.96.0.11"), port: 80, proto: 6}
	for _, step := range []func() error{
		func() error { return w.setService(dns, svcHead{owner: 1}, []beKey{a, b}) },
		func() error { return w.setService(web, svcHead{owner: 1}, []beKey{a}) },
		func() error { return w.setService(dns, svcHead{owner: 1}, []beKey{b}) },
		func() error { return w.setService(web, svcHead{owner: 1}, nil) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := w.takeGone(), []flow{{dns, a}}; !reflect.DeepEqual(got, want) {
		t.Errorf("gone %v, want %v", got, want)
	}
	w.deleteService(dns)
	if got, want := w.takeGone(), []flow{{dns, b}}; !reflect.DeepEqual(got, want) {
		t.Errorf("gone %v, want %v", got, want)
	}
}

// TestWriterUnstuck: the backends a service with affinity loses are the
// affinity entries to forget; a service without affinity has none.
func TestWriterUnstuck(t *testing.T) {
	w := newWriter(newFakeMaps())
	a, b := beKey{addr: netip.MustParseAddr("10.1.0.1"), port: 80, proto: 6}, beKey{addr: netip.MustParseAddr("10.1.0.2"), port: 80, proto: 6}
	web := svcID{addr: netip.MustParseAddr("10.96.0.10"), port: 80, proto: 6}
	plain := svcID{addr: netip.MustParseAddr("10.96.0.11"), port: 80, proto: 6}
	sticky := svcHead{owner: 1, affinity: 10800}
	var idA uint32
	for _, step := range []func() error{
		func() error { return w.setService(web, sticky, []beKey{a, b}) },
		func() error { idA = w.backends[a].id; return w.setService(plain, svcHead{owner: 1}, []beKey{a, b}) },
		func() error { return w.setService(web, sticky, []beKey{b}) },
		func() error { return w.setService(plain, svcHead{owner: 1}, []beKey{b}) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := w.takeUnstuck(), []stuck{{web, idA}}; !reflect.DeepEqual(got, want) {
		t.Errorf("unstuck %v, want %v", got, want)
	}
}
