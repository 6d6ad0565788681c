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
	svcs map[slotKey]sockSvcValue
	bes  map[uint32]beKey
	// broken is the first moment a connect() could have seen half a
	// service.
	broken error
	ops    int
	// failAt makes the op of that number fail; 0 never.
	failAt int
}

func newFakeMaps() *fakeMaps {
	return &fakeMaps{svcs: map[slotKey]sockSvcValue{}, bes: map[uint32]beKey{}}
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
		if k.slot != 0 {
			continue
		}
		for i := uint16(1); i <= v.Count; i++ {
			slot, ok := f.svcs[slotKey{k.svc, i}]
			if !ok {
				return fmt.Errorf("%v: count %d covers missing slot %d", k.svc, v.Count, i)
			}
			if _, ok := f.bes[slot.BackendId]; !ok {
				return fmt.Errorf("%v: slot %d names missing backend %d", k.svc, i, slot.BackendId)
			}
		}
	}
	return nil
}

func (f *fakeMaps) putServices(ks []slotKey, vs []sockSvcValue) error {
	for i, k := range ks {
		if err := f.op("put service", func() { f.svcs[k] = vs[i] }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) deleteServices(ks []slotKey) error {
	for _, k := range ks {
		if err := f.op("delete service", func() { delete(f.svcs, k) }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) putBackends(ids []uint32, bs []beKey) error {
	for i, id := range ids {
		if err := f.op("put backend", func() { f.bes[id] = bs[i] }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) deleteBackends(ids []uint32) error {
	for _, id := range ids {
		if err := f.op("delete backend", func() { delete(f.bes, id) }); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMaps) dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	return maps.Clone(f.svcs), maps.Clone(f.bes), nil
}

// resolved is what the maps make of each service: its backends in slot
// order, nil for a refusal.
func (f *fakeMaps) resolved() map[svcID][]beKey {
	out := map[svcID][]beKey{}
	for k, v := range f.svcs {
		if k.slot != 0 {
			continue
		}
		var eps []beKey
		for i := uint16(1); i <= v.Count; i++ {
			eps = append(eps, f.bes[f.svcs[slotKey{k.svc, i}].BackendId])
		}
		out[k.svc] = eps
	}
	return out
}
