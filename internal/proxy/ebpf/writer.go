package ebpf

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
)

// kernelMaps are the service and backend maps of one IP family. Each
// call writes its entries in the order given, and stops at the first
// error. The kernel's are in kernelmaps.go; tests use fakeMaps.
type kernelMaps interface {
	putServices(ks []slotKey, vs []sockSvcValue) error
	deleteServices(ks []slotKey) error
	putBackends(ids []uint32, bs []beKey) error
	deleteBackends(ids []uint32) error
	// dump reads both maps whole.
	dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error)
}

// svcState is one service as the writer last wrote it.
type svcState struct {
	svcHead
	count uint16   // the head's count as the kernel has it
	slots []uint32 // backend ids of slots 1..count; nil when load found one missing
	high  uint16   // the highest slot the kernel may hold
}

// svcHead is what a service's head says besides its count.
type svcHead struct {
	owner    uint32
	affinity uint32 // seconds, 0 for none
}

type beState struct {
	id   uint32
	refs int
}

// writer keeps a copy of what the maps hold and changes them in an order
// that a concurrent connect() can never catch half done: a backend is
// written before any slot names it, a slot before the count covers it,
// and on the way down the count shrinks before its slots and backends go.
//
// setService and deleteService only plan; flush writes every planned
// entry of a phase, in batches, before any of the next phase, so that
// the order holds across services too, and 10,000 services cost a few
// hundred system calls rather than 210,000.
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
	// unstuck are the backends that services with affinity lost since
	// takeUnstuck: their affinity entries are to be forgotten.
	unstuck []stuck
	plan    plan
}

// stuck is a service's affinity to one of its backends.
type stuck struct {
	svc svcID
	id  uint32
}

// plan is what flush writes, phase after phase. A service planned twice
// before a flush (load's stray slots, then the service's write) keeps
// the last plan of each entry: an entry is never both written and
// deleted.
type plan struct {
	backends  []uint32 // 1. backends that slots will name
	backendVs []beKey
	slots     map[slotKey]sockSvcValue // 2. slots 1..n
	heads     map[slotKey]sockSvcValue // 3. heads: a count that covers slots written
	goneHeads map[slotKey]bool         // 4. heads of services that go
	goneSlots map[slotKey]bool         // 5. slots past a count
	goneBes   []uint32                 // 6. backends no slot names
	// freed ids are reused only once flush has deleted them.
	freed []uint32
}

func (p *plan) put(k slotKey, v sockSvcValue) {
	if p.slots == nil {
		p.slots, p.heads = map[slotKey]sockSvcValue{}, map[slotKey]sockSvcValue{}
	}
	delete(p.goneHeads, k)
	delete(p.goneSlots, k)
	if k.slot == 0 {
		p.heads[k] = v
	} else {
		p.slots[k] = v
	}
}

func (p *plan) del(k slotKey) {
	if p.goneSlots == nil {
		p.goneHeads, p.goneSlots = map[slotKey]bool{}, map[slotKey]bool{}
	}
	delete(p.heads, k)
	delete(p.slots, k)
	if k.slot == 0 {
		p.goneHeads[k] = true
	} else {
		p.goneSlots[k] = true
	}
}

// sorted gives a phase's entries in one order, so that the same plan
// makes the same writes.
func sorted[V any](m map[slotKey]V) ([]slotKey, []V) {
	ks := slices.SortedFunc(maps.Keys(m), func(a, b slotKey) int {
		return cmp.Or(a.svc.addr.Compare(b.svc.addr), cmp.Compare(a.svc.port, b.svc.port),
			cmp.Compare(a.svc.proto, b.svc.proto), cmp.Compare(a.slot, b.slot))
	})
	vs := make([]V, len(ks))
	for i, k := range ks {
		vs[i] = m[k]
	}
	return ks, vs
}

// flow is a translation a socket may hold: service to endpoint.
type flow struct {
	svc svcID
	be  beKey
}

const protoUDP = 17

func newWriter(m kernelMaps) *writer {
	return &writer{m: m, services: map[svcID]*svcState{}, backends: map[beKey]*beState{}, byID: map[uint32]beKey{}, nextID: 1}
}

// takeUnstuck returns and forgets unstuck.
func (w *writer) takeUnstuck() []stuck {
	u := w.unstuck
	w.unstuck = nil
	return u
}

// takeGone returns and forgets gone.
func (w *writer) takeGone() []flow {
	g := w.gone
	w.gone = nil
	return g
}

// left records the endpoints a service no longer has: a UDP service's
// connected sockets and any service's affinity to them are to go.
func (w *writer) left(s svcID, h svcHead, old, cur []uint32) {
	for _, id := range old {
		if slices.Contains(cur, id) {
			continue
		}
		if s.proto == protoUDP {
			w.gone = append(w.gone, flow{s, w.byID[id]})
		}
		if h.affinity > 0 {
			w.unstuck = append(w.unstuck, stuck{s, id})
		}
	}
}

// flush writes the plan. After an error the copy no longer matches the
// kernel (every entry before the failed one is written, none after):
// the caller must load before the next write. The kernel is never left
// half ordered, since each phase starts only once the previous one is
// written whole.
func (w *writer) flush() error {
	p := w.plan
	w.plan = plan{}
	slots, slotVs := sorted(p.slots)
	heads, headVs := sorted(p.heads)
	goneHeads, _ := sorted(p.goneHeads)
	goneSlots, _ := sorted(p.goneSlots)
	steps := []func() error{
		func() error { return w.m.putBackends(p.backends, p.backendVs) },
		func() error { return w.m.putServices(slots, slotVs) },
		func() error { return w.m.putServices(heads, headVs) },
		func() error { return w.m.deleteServices(goneHeads) },
		func() error { return w.m.deleteServices(goneSlots) },
		func() error { return w.m.deleteBackends(p.goneBes) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	w.free = append(w.free, p.freed...)
	return nil
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
	*w = writer{m: w.m, services: map[svcID]*svcState{}, backends: map[beKey]*beState{}, byID: map[uint32]beKey{}, nextID: 1,
		gone: w.gone, unstuck: w.unstuck}
	for id, b := range bes {
		w.byID[id] = b
		w.backends[b] = &beState{id: id}
		w.nextID = max(w.nextID, id+1)
	}
	for k, v := range svcs {
		if k.slot != 0 {
			continue
		}
		s := &svcState{svcHead: svcHead{owner: v.Owner, affinity: v.AffinitySec}, count: v.Count}
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
	for k := range svcs {
		if _, ok := w.services[k.svc]; k.slot != 0 && !ok {
			w.plan.del(k)
		}
	}
	return nil
}

// acquire returns b's backend id, planning its write when it is new.
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
	w.plan.backends = append(w.plan.backends, id)
	w.plan.backendVs = append(w.plan.backendVs, b)
	w.backends[b] = &beState{id: id, refs: 1}
	w.byID[id] = b
	return id, nil
}

// release drops one reference to each id; a backend nobody names is
// deleted, after every slot that named it.
func (w *writer) release(ids []uint32) {
	for _, id := range ids {
		b := w.byID[id]
		st := w.backends[b]
		if st == nil {
			continue
		}
		if st.refs--; st.refs > 0 {
			continue
		}
		delete(w.backends, b)
		delete(w.byID, id)
		w.plan.goneBes = append(w.plan.goneBes, id)
		w.plan.freed = append(w.plan.freed, id)
	}
}

// setService plans for s to lead to eps, refusing when eps is empty.
func (w *writer) setService(s svcID, h svcHead, eps []beKey) error {
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
		w.plan.put(slotKey{s, uint16(i + 1)}, sockSvcValue{BackendId: id})
	}
	if old == nil || old.svcHead != h || int(old.count) != len(ids) {
		w.plan.put(slotKey{s, 0}, sockSvcValue{Count: uint16(len(ids)), Owner: h.owner, AffinitySec: h.affinity})
	}
	w.services[s] = &svcState{svcHead: h, count: uint16(len(ids)), slots: ids, high: uint16(len(ids))}
	for i := len(ids); i < max(len(oldSlots), high); i++ {
		w.plan.del(slotKey{s, uint16(i + 1)})
	}
	if old != nil {
		w.left(s, old.svcHead, oldSlots, ids)
	}
	w.release(oldSlots)
	return nil
}

// deleteService plans s's removal: its head first, so that no connect()
// finds it while its slots go.
func (w *writer) deleteService(s svcID) {
	old := w.services[s]
	if old == nil {
		return
	}
	w.plan.del(slotKey{s, 0})
	delete(w.services, s)
	for i := range max(len(old.slots), int(old.high)) {
		w.plan.del(slotKey{s, uint16(i + 1)})
	}
	w.left(s, old.svcHead, old.slots, nil)
	w.release(old.slots)
}

// collect plans the deletion of the backends that no slot names: what
// load found orphaned.
func (w *writer) collect() {
	var ids []uint32
	for _, st := range w.backends {
		if st.refs == 0 {
			st.refs = 1 // release takes it to 0
			ids = append(ids, st.id)
		}
	}
	slices.Sort(ids)
	w.release(ids)
}
