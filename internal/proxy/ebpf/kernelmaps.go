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

func (m maps4) putService(k slotKey, v sockSvcValue) error { return m.svcs.Put(key4(k), v) }
func (m maps4) deleteService(k slotKey) error {
	return ignoreMissing(m.svcs.Delete(key4(k)))
}
func (m maps4) putBackend(id uint32, b beKey) error { return m.bes.Put(id, backend4(b)) }
func (m maps4) deleteBackend(id uint32) error       { return ignoreMissing(m.bes.Delete(id)) }

func (m maps4) dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	return dump(m.svcs, m.bes, slotKeyOf4, beKeyOf4)
}

func (m maps6) putService(k slotKey, v sockSvcValue) error { return m.svcs.Put(key6(k), v) }
func (m maps6) deleteService(k slotKey) error {
	return ignoreMissing(m.svcs.Delete(key6(k)))
}
func (m maps6) putBackend(id uint32, b beKey) error { return m.bes.Put(id, backend6(b)) }
func (m maps6) deleteBackend(id uint32) error       { return ignoreMissing(m.bes.Delete(id)) }

func (m maps6) dump() (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	return dump(m.svcs, m.bes, slotKeyOf6, beKeyOf6)
}

func dump[K, B any](svcMap, beMap *ebpf.Map, keyOf func(K) slotKey, beOf func(B) beKey) (map[slotKey]sockSvcValue, map[uint32]beKey, error) {
	svcs := map[slotKey]sockSvcValue{}
	var k K
	var v sockSvcValue
	it := svcMap.Iterate()
	for it.Next(&k, &v) {
		svcs[keyOf(k)] = v
	}
	if err := it.Err(); err != nil {
		return nil, nil, err
	}
	bes := map[uint32]beKey{}
	var id uint32
	var b B
	it = beMap.Iterate()
	for it.Next(&id, &b) {
		bes[id] = beOf(b)
	}
	return svcs, bes, it.Err()
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
