package ebpf

import (
	"errors"

	"github.com/cilium/ebpf"
)

// mapsOf writes the loaded maps one entry at a time.
type mapsOf struct{ objs *sockObjects }

func (m mapsOf) putService(k sockSvc4Key, v sockSvcValue) error {
	return m.objs.KoSvc4.Put(k, v)
}

func (m mapsOf) deleteService(k sockSvc4Key) error {
	return ignoreMissing(m.objs.KoSvc4.Delete(k))
}

func (m mapsOf) putBackend(id uint32, v sockBackend4) error {
	return m.objs.KoBe4.Put(id, v)
}

func (m mapsOf) deleteBackend(id uint32) error {
	return ignoreMissing(m.objs.KoBe4.Delete(id))
}

func (m mapsOf) dump() (map[sockSvc4Key]sockSvcValue, map[uint32]sockBackend4, error) {
	svcs := map[sockSvc4Key]sockSvcValue{}
	var k sockSvc4Key
	var v sockSvcValue
	it := m.objs.KoSvc4.Iterate()
	for it.Next(&k, &v) {
		svcs[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, nil, err
	}
	bes := map[uint32]sockBackend4{}
	var id uint32
	var b sockBackend4
	it = m.objs.KoBe4.Iterate()
	for it.Next(&id, &b) {
		bes[id] = b
	}
	return svcs, bes, it.Err()
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
