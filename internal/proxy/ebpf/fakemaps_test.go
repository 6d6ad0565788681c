package ebpf

import (
	"errors"
	"fmt"
	"maps"
)

// fakeMaps holds the two maps in memory and checks, after every single
// write, what a concurrent connect() relies on: every slot a head's count
// covers exists and names a backend that exists.
type fakeMaps struct {
	svcs map[sockSvc4Key]sockSvcValue
	bes  map[uint32]sockBackend4
	// broken is the first moment a connect() could have seen half a
	// service.
	broken error
	ops    int
	// failAt makes the op of that number fail; 0 never.
	failAt int
}

func newFakeMaps() *fakeMaps {
	return &fakeMaps{svcs: map[sockSvc4Key]sockSvcValue{}, bes: map[uint32]sockBackend4{}}
}

var errInjected = errors.New("injected failure")

func (f *fakeMaps) op(name string, do func()) error {
	f.ops++
	if f.ops == f.failAt {
		return errInjected
	}
	do()
	if err := f.check(); err != nil && f.broken == nil {
		f.broken = fmt.Errorf("after op %d (%s): %w", f.ops, name, err)
	}
	return nil
}

func (f *fakeMaps) check() error {
	for k, v := range f.svcs {
		if k.Slot != 0 {
			continue
		}
		for i := uint16(1); i <= v.Count; i++ {
			sk := k
			sk.Slot = i
			slot, ok := f.svcs[sk]
			if !ok {
				return fmt.Errorf("%v: count %d covers missing slot %d", idOfKey(k), v.Count, i)
			}
			if _, ok := f.bes[slot.BackendId]; !ok {
				return fmt.Errorf("%v: slot %d names missing backend %d", idOfKey(k), i, slot.BackendId)
			}
		}
	}
	return nil
}

func (f *fakeMaps) putService(k sockSvc4Key, v sockSvcValue) error {
	return f.op("put service", func() { f.svcs[k] = v })
}

func (f *fakeMaps) deleteService(k sockSvc4Key) error {
	return f.op("delete service", func() { delete(f.svcs, k) })
}

func (f *fakeMaps) putBackend(id uint32, v sockBackend4) error {
	return f.op("put backend", func() { f.bes[id] = v })
}

func (f *fakeMaps) deleteBackend(id uint32) error {
	return f.op("delete backend", func() { delete(f.bes, id) })
}

func (f *fakeMaps) dump() (map[sockSvc4Key]sockSvcValue, map[uint32]sockBackend4, error) {
	return maps.Clone(f.svcs), maps.Clone(f.bes), nil
}

// resolved is what the maps make of each service: its backends in slot
// order, nil for a refusal.
func (f *fakeMaps) resolved() map[svcID][]beKey {
	out := map[svcID][]beKey{}
	for k, v := range f.svcs {
		if k.Slot != 0 {
			continue
		}
		var eps []beKey
		for i := uint16(1); i <= v.Count; i++ {
			sk := k
			sk.Slot = i
			eps = append(eps, beKeyOf(f.bes[f.svcs[sk].BackendId]))
		}
		out[idOfKey(k)] = eps
	}
	return out
}
