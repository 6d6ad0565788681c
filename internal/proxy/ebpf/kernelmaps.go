package ebpf

import (
	"errors"

	"github.com/cilium/ebpf"
)

// kernelMaps of each family over the loaded maps: the same writer with
// the family's key and value layouts.
type (
	maps4 struct{ svcs, bes *ebpf.Map }
	maps6 struct{ svcs, bes *ebpf.Map }
)

func (m maps4) putServices(ks []slotKey, vs []sockSvcValue) error {
	return putAll(m.svcs, convert(ks, key4), vs)
}
func (m maps4) deleteServices(ks []slotKey) error { return deleteAll(m.svcs, convert(ks, key4)) }
func (m maps4) putBackends(ids []uint32, bs []beKey) error {
	return putAll(m.bes, ids, convert(bs, backend4))
}
func (m maps4) deleteBackends(ids []uint32) error { return deleteAll(m.bes, ids) }
func (m maps4) dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	return dump(m.svcs, m.bes, slotKeyOf4, beKeyOf4)
}

func (m maps6) putServices(ks []slotKey, vs []sockSvcValue) error {
	return putAll(m.svcs, convert(ks, key6), vs)
}
func (m maps6) deleteServices(ks []slotKey) error { return deleteAll(m.svcs, convert(ks, key6)) }
func (m maps6) putBackends(ids []uint32, bs []beKey) error {
	return putAll(m.bes, ids, convert(bs, backend6))
}
func (m maps6) deleteBackends(ids []uint32) error { return deleteAll(m.bes, ids) }
func (m maps6) dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	return dump(m.svcs, m.bes, slotKeyOf6, beKeyOf6)
}

func convert[A, B any](as []A, f func(A) B) []B {
	out := make([]B, len(as))
	for i, a := range as {
		out[i] = f(a)
	}
	return out
}

// batch is how many entries one system call writes or reads.
const batch = 4096

// putAll writes the entries in order, a batch a system call; a kernel
// without batch updates (before 5.6) gets them one at a time.
func putAll[K, V any](m *ebpf.Map, ks []K, vs []V) error {
	for len(ks) > 0 {
		n := min(len(ks), batch)
		_, err := m.BatchUpdate(ks[:n], vs[:n], nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			for i := range ks {
				if err := m.Put(ks[i], vs[i]); err != nil {
					return err
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
		ks, vs = ks[n:], vs[n:]
	}
	return nil
}

// deleteAll deletes one at a time: a batch delete stops at the first key
// that is missing, and a plan may name slots that never were.
func deleteAll[K any](m *ebpf.Map, ks []K) error {
	for _, k := range ks {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

func dump[K, B any](svcMap, beMap *ebpf.Map, keyOf func(K) slotKey, beOf func(B) beKey) (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	svcs := map[slotKey]sockSvcValue{}
	err := readAll(svcMap, func(k K, v sockSvcValue) { svcs[keyOf(k)] = v })
	if err != nil {
		return nil, nil, err
	}
	bes := map[uint32]beKey{}
	err = readAll(beMap, func(id uint32, b B) { bes[id] = beOf(b) })
	return svcs, bes, err
}

// readAll reads a hash map in batches: a full sync at 10,000 services
// reads 110,000 entries. Kernels without batch lookups (before 5.6) are
// read an entry at a time.
func readAll[K, V any](m *ebpf.Map, each func(K, V)) error {
	keys, vals := make([]K, batch), make([]V, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			each(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return err
		}
	}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		each(k, v)
	}
	return it.Err()
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
