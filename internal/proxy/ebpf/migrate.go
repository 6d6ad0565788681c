package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// lbMaps name one another's backend ids: a run's programs must see all of
// them from the same generation, so when one is migrated they all are.
var lbMaps = []string{"ko_svc4", "ko_be4", "ko_svc6", "ko_be6", "ko_affinity"}

// mapsToMigrate opens the pinned maps whose layout (type, key or value
// size, capacity, flags) is not this version's, with the load-balancing
// maps all together when one of them differs. The new version gets new
// maps for them; the old programs keep the old ones until attach swaps
// the programs, so nothing is dropped while a connect() may read it.
func mapsToMigrate(spec *ebpf.CollectionSpec, dir string) (map[string]*ebpf.Map, error) {
	old := map[string]*ebpf.Map{}
	pinned := map[string]*ebpf.Map{}
	defer func() {
		for name, m := range pinned {
			if old[name] != m {
				m.Close()
			}
		}
	}()
	lb := false
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening the pinned map %s: %w", name, err)
		}
		pinned[name] = m
		if err := ms.Compatible(m); err != nil {
			if !errors.Is(err, ebpf.ErrMapIncompatible) {
				return nil, err
			}
			old[name] = m
			lb = lb || isLB(name)
		}
	}
	if lb {
		for _, name := range lbMaps {
			if m := pinned[name]; m != nil {
				old[name] = m
			}
		}
	}
	return old, nil
}

func isLB(name string) bool {
	for _, n := range lbMaps {
		if n == name {
			return true
		}
	}
	return false
}

// copyMap copies what it can of an old map into its replacement: every
// entry when only the capacity or flags changed, so that the entries of
// clusters not synced yet survive; nothing when the key or value layout
// changed (the first full sync writes what the model has) or the map is
// per-CPU or socket storage, which userspace cannot walk that way. A
// socket's translations in old socket storage are then lost: recvmsg and
// getpeername of sockets connected before no longer show the service.
//
// It says whether the entries were copied, for the log: a layout change
// leaves the maps to the first full sync, which writes what the model
// has, a cluster not synced yet included when its last known state
// (internal/laststate) could be read at the start.
func copyMap(from, to *ebpf.Map) bool {
	switch from.Type() {
	case ebpf.Hash, ebpf.LRUHash, ebpf.Array:
	default:
		return false
	}
	if from.Type() != to.Type() || from.KeySize() != to.KeySize() || from.ValueSize() != to.ValueSize() {
		return false
	}
	k, v := make([]byte, from.KeySize()), make([]byte, from.ValueSize())
	it := from.Iterate()
	for it.Next(&k, &v) {
		// A smaller map keeps what fits; the full sync writes the rest.
		_ = to.Put(k, v)
	}
	return true
}

// byName are the maps by their names in bpf/sock.c.
func (o *sockObjects) byName() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		"ko_svc4": o.KoSvc4, "ko_be4": o.KoBe4, "ko_svc6": o.KoSvc6, "ko_be6": o.KoBe6,
		"ko_affinity": o.KoAffinity, "ko_sock": o.KoSock, "ko_config": o.KoConfig, "ko_nobackend": o.KoNobackend,
	}
}
