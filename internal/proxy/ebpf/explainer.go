package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// explainer reads the pinned maps for `kube-outpost explain`.
type explainer struct{ dir string }

func newExplainer(*config.Config, *slog.Logger) proxy.Explainer {
	return &explainer{dir: DefaultPinDir}
}

// Share is what bpf_get_prandom_u32() % n gives each of n endpoints.
func (*explainer) Share(n int) proxy.EndpointShare {
	if n == 0 {
		return proxy.EndpointShare{}
	}
	return proxy.EndpointShare{Probability: 1 / float64(n)}
}

func (e *explainer) ExplainPort(_ context.Context, want proxy.Want) (proxy.PortView, error) {
	if !want.Target.Addr().Is4() {
		return proxy.PortView{Empty: true, Notes: []string{"mode ebpf translates no IPv6 yet"}}, nil
	}
	svcs, err := ebpf.LoadPinnedMap(filepath.Join(e.dir, "ko_svc4"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return proxy.PortView{}, fmt.Errorf("kube-outpost has pinned no ebpf maps: %w", err)
	}
	defer svcs.Close()
	bes, err := ebpf.LoadPinnedMap(filepath.Join(e.dir, "ko_be4"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return proxy.PortView{}, err
	}
	defer bes.Close()
	id := svcID{addr: want.Target.Addr(), port: want.Target.Port(), proto: protoOf(want.Protocol)}
	var head sockSvcValue
	err = svcs.Lookup(id.key(0), &head)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return proxy.PortView{Empty: true, Endpoints: []proxy.KernelEndpoint{}}, nil
	}
	if err != nil {
		return proxy.PortView{}, err
	}
	v := proxy.PortView{Endpoints: []proxy.KernelEndpoint{}}
	v.Lines = append(v.Lines, fmt.Sprintf("ko_svc4 %s/%d slot 0: count %d owner %#x", want.Target, id.proto, head.Count, head.Owner))
	if head.Count == 0 {
		v.Lines = append(v.Lines, "  connect() fails with ECONNREFUSED")
	}
	var got []netip.AddrPort
	for i := uint16(1); i <= head.Count; i++ {
		var slot sockSvcValue
		var be sockBackend4
		if err := svcs.Lookup(id.key(i), &slot); err != nil {
			v.Mismatches = append(v.Mismatches, fmt.Sprintf("slot %d: %v", i, err))
			continue
		}
		if err := bes.Lookup(slot.BackendId, &be); err != nil {
			v.Mismatches = append(v.Mismatches, fmt.Sprintf("slot %d: backend %d: %v", i, slot.BackendId, err))
			continue
		}
		b := beKeyOf(be)
		ap := netip.AddrPortFrom(b.addr, b.port)
		got = append(got, ap)
		v.Lines = append(v.Lines, fmt.Sprintf("  slot %d: backend %d %s", i, slot.BackendId, ap))
		v.Endpoints = append(v.Endpoints, proxy.KernelEndpoint{Addr: ap, EndpointShare: e.Share(int(head.Count))})
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
