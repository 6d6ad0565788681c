package ebpf

import (
	"errors"
	"fmt"
	"slices"
)

// kernelMaps are the service and backend maps of one IP family, written
// one entry at a time. The kernel's are in kernelmaps.go; tests use
// fakeMaps.
type kernelMaps interface {
	putService(k slotKey, v sockSvcValue) error
	deleteService(k slotKey) error
	putBackend(id uint32, b beKey) error
	deleteBackend(id uint32) error
	// dump reads both maps whole.
	dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error)
}

// svcState is one service as the writer last wrote it.
type svcState struct {
	owner uint32
	count uint16   // the head's count as the kernel has it
	slots []uint32 // backend ids of slots 1..count; nil when load found one missing
	high  uint16   // the highest slot the kernel may hold
}

type beState struct {
	id   uint32
	refs int
}

// writer keeps a copy of what the maps hold and changes them in an order
// that a concurrent connect() can never catch half done: a backend is
// written before any slot names it, a slot before the count covers it,
// and on the way down the count shrinks before its slots and backends go.
type writer struct {
	m        kernelMaps
	services map[svcID]*svcState
	backends map[beKey]*beState
	byID     map[uint32]beKey
	nextID   uint32
	free     []uint32
	// gone are the UDP translations that ended since takeGone: their
	// connected sockets are to be destroyed (destroy.go).
	gone []flow
}

// flow is a translation a socket may hold: service to endpoint.
type flow struct {
	svc svcID
	be  beKey
}

const protoUDP = 17

// takeGone returns and forgets gone.
func (w *writer) takeGone() []flow {
	g := w.gone
	w.gone = nil
	return g
}

// left records the endpoints of a UDP service that it no longer has.
func (w *writer) left(s svcID, old, cur []uint32) {
	if s.proto != protoUDP {
		return
	}
	for _, id := range old {
		if !slices.Contains(cur, id) {
			w.gone = append(w.gone, flow{s, w.byID[id]})
		}
	}
}

func newWriter(m kernelMaps) *writer {
	return &writer{m: m, services: map[svcID]*svcState{}, backends: map[beKey]*beState{}, byID: map[uint32]beKey{}, nextID: 1}
}

// load replaces the copy by what the kernel holds: at a full sync, after
// a failed one, and when a restarted daemon takes over pinned maps.
// Slots past a head's count, slots or backends missing, and backends no
// slot names are what an interrupted writer left; they are mended by the
// next writes (setService, collect).
func (w *writer) load() error {
	svcs, bes, err := w.m.dump()
	if err != nil {
		return err
	}
	*w = writer{m: w.m, services: map[svcID]*svcState{}, backends: map[beKey]*beState{}, byID: map[uint32]beKey{}, nextID: 1, gone: w.gone}
	for id, b := range bes {
		w.byID[id] = b
		w.backends[b] = &beState{id: id}
		w.nextID = max(w.nextID, id+1)
	}
	for k, v := range svcs {
		if k.slot != 0 {
			continue
		}
		s := &svcState{owner: v.Owner, count: v.Count}
		for i := uint16(1); i <= v.Count; i++ {
			slot, ok := svcs[slotKey{k.svc, i}]
			if _, known := w.byID[slot.BackendId]; !ok || !known {
				// A count that covers a missing slot: the next
				// write of this service rewrites every slot.
				s.slots = nil
				break
			}
			s.slots = append(s.slots, slot.BackendId)
		}
		w.services[k.svc] = s
	}
	for k := range svcs {
		if s := w.services[k.svc]; s != nil {
			s.high = max(s.high, k.slot)
		}
	}
	for _, s := range w.services {
		for _, id := range s.slots {
			w.backends[w.byID[id]].refs++
		}
	}
	// Slots beyond a head's count are deleted at the service's next
	// write (high); stray slots of a service without a head go now.
	var errs []error
	for k := range svcs {
		if _, ok := w.services[k.svc]; k.slot != 0 && !ok {
			errs = append(errs, w.m.deleteService(k))
		}
	}
	return errors.Join(errs...)
}

// acquire returns b's backend id, writing the backend when it is new.
func (w *writer) acquire(b beKey) (uint32, error) {
	if st, ok := w.backends[b]; ok {
		st.refs++
		return st.id, nil
	}
	var id uint32
	if n := len(w.free); n > 0 {
		id, w.free = w.free[n-1], w.free[:n-1]
	} else {
		if w.nextID == 0 {
			return 0, fmt.Errorf("out of backend ids")
		}
		id = w.nextID
		w.nextID++
	}
	if err := w.m.putBackend(id, b); err != nil {
		w.free = append(w.free, id)
		return 0, fmt.Errorf("writing backend %d (%s:%d): %w", id, b.addr, b.port, err)
	}
	w.backends[b] = &beState{id: id, refs: 1}
	w.byID[id] = b
	return id, nil
}

// release drops one reference to each id; a backend nobody names is
// deleted, after every slot that named it.
func (w *writer) release(ids []uint32) error {
	var errs []error
	for _, id := range ids {
		b := w.byID[id]
		st := w.backends[b]
		if st == nil {
			continue
		}
		if st.refs--; st.refs > 0 {
			continue
		}
		if err := w.m.deleteBackend(id); err != nil {
			errs = append(errs, fmt.Errorf("deleting backend %d: %w", id, err))
			st.refs = 0 // kept; collect tries again
			continue
		}
		delete(w.backends, b)
		delete(w.byID, id)
		w.free = append(w.free, id)
	}
	return errors.Join(errs...)
}

// setService makes s lead to eps, refusing when eps is empty. After an
// error the copy no longer matches the kernel (references are kept, so
// nothing a slot may name is deleted): the caller must load before the
// next write.
func (w *writer) setService(s svcID, owner uint32, eps []beKey) error {
	if len(eps) > 0xffff {
		return fmt.Errorf("%s:%d: %d endpoints, more than a service's %d slots", s.addr, s.port, len(eps), 0xffff)
	}
	old := w.services[s]
	var oldSlots []uint32
	var high int
	if old != nil {
		oldSlots, high = old.slots, int(old.high)
	}
	ids := make([]uint32, 0, len(eps))
	for _, b := range eps {
		id, err := w.acquire(b)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	for i, id := range ids {
		if i < len(oldSlots) && oldSlots[i] == id {
			continue
		}
		if err := w.m.putService(slotKey{s, uint16(i + 1)}, sockSvcValue{BackendId: id}); err != nil {
			// Slots past the old count are invisible; those below it
			// hold a live backend either way.
			return fmt.Errorf("writing %s:%d slot %d: %w", s.addr, s.port, i+1, err)
		}
	}
	if old == nil || old.owner != owner || int(old.count) != len(ids) {
		if err := w.m.putService(slotKey{s, 0}, sockSvcValue{Count: uint16(len(ids)), Owner: owner}); err != nil {
			return fmt.Errorf("writing %s:%d: %w", s.addr, s.port, err)
		}
	}
	w.services[s] = &svcState{owner: owner, count: uint16(len(ids)), slots: ids, high: uint16(len(ids))}
	var errs []error
	for i := len(ids); i < max(len(oldSlots), high); i++ {
		errs = append(errs, w.m.deleteService(slotKey{s, uint16(i + 1)}))
	}
	w.left(s, oldSlots, ids)
	errs = append(errs, w.release(oldSlots))
	return errors.Join(errs...)
}

// deleteService removes s: its head first, so that no connect() finds it
// while its slots go.
func (w *writer) deleteService(s svcID) error {
	old := w.services[s]
	if old == nil {
		return nil
	}
	if err := w.m.deleteService(slotKey{s, 0}); err != nil {
		return fmt.Errorf("deleting %s:%d: %w", s.addr, s.port, err)
	}
	delete(w.services, s)
	var errs []error
	for i := range max(len(old.slots), int(old.high)) {
		errs = append(errs, w.m.deleteService(slotKey{s, uint16(i + 1)}))
	}
	w.left(s, old.slots, nil)
	errs = append(errs, w.release(old.slots))
	return errors.Join(errs...)
}

// collect deletes the backends that no slot names: what load found
// orphaned, or a release that failed.
func (w *writer) collect() error {
	var ids []uint32
	for _, st := range w.backends {
		if st.refs == 0 {
			st.refs = 1 // release takes it to 0
			ids = append(ids, st.id)
		}
	}
	slices.Sort(ids)
	return w.release(ids)
}
