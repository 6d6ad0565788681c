package ebpf

import (
	"cmp"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// PinnedService is one service address in the maps pinned in a
// directory: what a connect() to it is translated to.
type PinnedService struct {
	Target   netip.AddrPort
	Protocol model.Protocol
	// Owner is the hash of the cluster's name the entry belongs to.
	Owner           uint32
	AffinitySeconds uint32
	// Backends are the head's count of slots, in slot order; none for
	// a service that is refused.
	Backends []PinnedBackend
}

// PinnedBackend is one slot of a service.
type PinnedBackend struct {
	Slot uint16
	ID   uint32
	// Addr is invalid when the slot or the backend it names is missing.
	Addr netip.AddrPort
}

// ReadPinned reads, read-only, the service and backend maps of both
// families pinned in dir, sorted by address, port and protocol, without
// the daemon: for tests, and for people who want to see the maps whole.
// The error wraps os.ErrNotExist when nothing is pinned there.
func ReadPinned(dir string) ([]PinnedService, error) {
	var out []PinnedService
	for _, fam := range []string{"4", "6"} {
		var ms [2]*ebpf.Map
		for i, name := range []string{"ko_svc" + fam, "ko_be" + fam} {
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			defer m.Close()
			ms[i] = m
		}
		var km kernelMaps = maps4{ms[0], ms[1]}
		if fam == "6" {
			km = maps6{ms[0], ms[1]}
		}
		svcs, bes, err := km.dump()
		if err != nil {
			return nil, fmt.Errorf("reading the IPv%s maps in %s: %w", fam, dir, err)
		}
		out = append(out, pinnedServices(svcs, bes)...)
	}
	slices.SortFunc(out, func(a, b PinnedService) int {
		return cmp.Or(a.Target.Compare(b.Target), cmp.Compare(a.Protocol, b.Protocol))
	})
	return out, nil
}

func pinnedServices(svcs map[slotKey]sockSvcValue, bes map[uint32]beKey) []PinnedService {
	var out []PinnedService
	for k, head := range svcs {
		if k.slot != 0 {
			continue
		}
		s := PinnedService{Target: netip.AddrPortFrom(k.svc.addr, k.svc.port), Protocol: protocolOf(k.svc.proto),
			Owner: head.Owner, AffinitySeconds: head.AffinitySec}
		for i := uint16(1); i <= head.Count; i++ {
			b := PinnedBackend{Slot: i}
			if slot, ok := svcs[slotKey{k.svc, i}]; ok {
				b.ID = slot.BackendId
				if be, ok := bes[slot.BackendId]; ok {
					b.Addr = netip.AddrPortFrom(be.addr, be.port)
				}
			}
			s.Backends = append(s.Backends, b)
		}
		out = append(out, s)
	}
	return out
}

// protocolOf names an IP protocol number as the model does.
func protocolOf(n uint8) model.Protocol {
	for _, p := range []model.Protocol{model.TCP, model.UDP, model.SCTP} {
		if m, _ := p.IPNumber(); m == n {
			return p
		}
	}
	return model.Protocol(fmt.Sprint(n))
}
