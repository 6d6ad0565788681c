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
	for _, v6 := range []bool{false, true} {
		svcs, bes, err := openPinned(dir, v6)
		if err != nil {
			return nil, err
		}
		defer svcs.Close()
		defer bes.Close()
		var km kernelMaps = maps4{svcs, bes}
		if v6 {
			km = maps6{svcs, bes}
		}
		s, b, err := km.dump()
		if err != nil {
			return nil, fmt.Errorf("reading the IPv%s maps in %s: %w", familyName(v6), dir, err)
		}
		out = append(out, pinnedServices(s, b)...)
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

// openPinned opens, read-only, one family's service and backend maps
// pinned in dir.
func openPinned(dir string, v6 bool) (svcs, bes *ebpf.Map, err error) {
	fam := familyName(v6)
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	if svcs, err = ebpf.LoadPinnedMap(filepath.Join(dir, "ko_svc"+fam), ro); err != nil {
		return nil, nil, fmt.Errorf("ko_svc%s: %w", fam, err)
	}
	if bes, err = ebpf.LoadPinnedMap(filepath.Join(dir, "ko_be"+fam), ro); err != nil {
		svcs.Close()
		return nil, nil, fmt.Errorf("ko_be%s: %w", fam, err)
	}
	return svcs, bes, nil
}

func familyName(v6 bool) string { return map[bool]string{false: "4", true: "6"}[v6] }
