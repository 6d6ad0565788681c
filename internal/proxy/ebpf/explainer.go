package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// explainer reads the pinned maps for `kube-outpost explain`.
type explainer struct{ dir string }

func newExplainer(cfg *config.Config, _ *slog.Logger) proxy.Explainer {
	dir := DefaultPinDir
	if cfg != nil && cfg.EBPFPinDir != "" {
		dir = cfg.EBPFPinDir
	}
	return &explainer{dir: dir}
}

// Share is what bpf_get_prandom_u32() % n gives each of n endpoints.
func (*explainer) Share(n int) proxy.EndpointShare {
	if n == 0 {
		return proxy.EndpointShare{}
	}
	return proxy.EndpointShare{Probability: 1 / float64(n)}
}

func (e *explainer) ExplainPort(_ context.Context, want proxy.Want) (proxy.PortView, error) {
	v6 := want.Target.Addr().Is6()
	svcs, bes, err := openPinned(e.dir, v6)
	if err != nil {
		return proxy.PortView{}, fmt.Errorf("kube-outpost has pinned no ebpf maps: %w", err)
	}
	defer svcs.Close()
	defer bes.Close()
	return explain(readerOf(v6, svcs, bes), want, e.Share)
}

// reader looks up one family's maps.
type reader struct {
	service func(k slotKey) (sockSvcValue, error)
	backend func(id uint32) (beKey, error)
}

func readerOf(v6 bool, svcs, bes *ebpf.Map) reader {
	r := reader{service: func(k slotKey) (v sockSvcValue, err error) {
		if v6 {
			return v, svcs.Lookup(key6(k), &v)
		}
		return v, svcs.Lookup(key4(k), &v)
	}}
	r.backend = func(id uint32) (beKey, error) {
		if v6 {
			var b sockBackend6
			err := bes.Lookup(id, &b)
			return beKeyOf6(b), err
		}
		var b sockBackend4
		err := bes.Lookup(id, &b)
		return beKeyOf4(b), err
	}
	return r
}

func explain(r reader, want proxy.Want, share func(int) proxy.EndpointShare) (proxy.PortView, error) {
	id := svcID{addr: want.Target.Addr(), port: want.Target.Port(), proto: protoOf(want.Protocol)}
	head, err := r.service(slotKey{id, 0})
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		v := proxy.PortView{Empty: true, Endpoints: []proxy.KernelEndpoint{}}
		if want.Key != nil {
			// The model has the port: its connects go untranslated,
			// to whatever else answers at the address.
			v.Mismatches = []string{fmt.Sprintf("no service entry for %s %s in the maps: connect() to it is not translated", want.Target, want.Protocol)}
		}
		return v, nil
	}
	if err != nil {
		return proxy.PortView{}, err
	}
	v := proxy.PortView{Endpoints: []proxy.KernelEndpoint{}}
	v.Lines = append(v.Lines, fmt.Sprintf("service %s %s slot 0: count %d, owner %#x, affinity %ds", want.Target, want.Protocol, head.Count, head.Owner, head.AffinitySec))
	if a := affinitySeconds(want.Affinity); a != head.AffinitySec {
		v.Mismatches = append(v.Mismatches, fmt.Sprintf("affinity %ds, the model wants %ds", head.AffinitySec, a))
	}
	if head.Count == 0 {
		v.Lines = append(v.Lines, "  connect() fails with ECONNREFUSED")
	}
	var got []netip.AddrPort
	for i := uint16(1); i <= head.Count; i++ {
		slot, err := r.service(slotKey{id, i})
		if err != nil {
			v.Mismatches = append(v.Mismatches, fmt.Sprintf("slot %d: %v", i, err))
			continue
		}
		b, err := r.backend(slot.BackendId)
		if err != nil {
			v.Mismatches = append(v.Mismatches, fmt.Sprintf("slot %d: backend %d: %v", i, slot.BackendId, err))
			continue
		}
		ap := netip.AddrPortFrom(b.addr, b.port)
		got = append(got, ap)
		v.Lines = append(v.Lines, fmt.Sprintf("  slot %d: backend %d %s", i, slot.BackendId, ap))
		v.Endpoints = append(v.Endpoints, proxy.KernelEndpoint{Addr: ap, EndpointShare: share(int(head.Count))})
	}
	var wanted []netip.AddrPort
	for _, w := range want.Endpoints {
		wanted = append(wanted, w.Addr)
	}
	slices.SortFunc(got, netip.AddrPort.Compare)
	slices.SortFunc(wanted, netip.AddrPort.Compare)
	if !slices.Equal(got, wanted) {
		v.Mismatches = append(v.Mismatches, fmt.Sprintf("the maps lead to %v, the model wants %v", got, wanted))
	}
	return v, nil
}
