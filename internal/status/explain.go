package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// BuildExplanation explains q from the desired state st, the refusals the
// model reported (Store.Refusals) and the kernel, as the explainer of the
// daemon's mode reads it. Its error wraps model.ErrNotFound when there is
// nothing to explain: no service port in the model, no refusal of the
// service, and nothing in the kernel.
func BuildExplanation(ctx context.Context, st *model.State, refusals []model.Refusal, q model.Query, mode string, k proxy.Explainer) (Explanation, error) {
	ex := Explanation{Query: q.String(), Mode: mode, Ports: []PortExplanation{}}
	matches, err := st.Lookup(q)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return ex, err
	}
	services := map[[3]string]bool{}
	if !q.IsTarget() {
		services[[3]string{q.Cluster, q.Namespace, q.Name}] = true
	}
	for _, m := range matches {
		services[[3]string{m.Port.Key.Cluster, m.Port.Key.Namespace, m.Port.Key.Name}] = true
	}
	for _, r := range refusals {
		if services[[3]string{r.Cluster, r.Namespace, r.Name}] {
			ex.Refused = append(ex.Refused, Refusal{Cluster: r.Cluster, Namespace: r.Namespace, Name: r.Name, Reason: bound(r.Reason)})
		}
	}
	unsynced := map[string]bool{}
	for _, m := range matches {
		switch {
		case m.Cluster.Synced || unsynced[m.Cluster.Name]:
		case !m.Cluster.LastKnown.IsZero():
			unsynced[m.Cluster.Name] = true
			ex.Notes = append(ex.Notes, fmt.Sprintf("cluster %q has not synced yet: its rules are programmed from its last known state, "+
				"saved %s by an earlier run, until it does", m.Cluster.Name, m.Cluster.LastKnown.UTC().Format(time.RFC3339)))
		default:
			unsynced[m.Cluster.Name] = true
			ex.Notes = append(ex.Notes, fmt.Sprintf("cluster %q has not synced yet: the kernel keeps the rules of an earlier run, "+
				"and the model may lack services it has not listed yet", m.Cluster.Name))
		}
		want := proxy.PortWant(k, m.Port, m.Addr)
		pe := desired(m, want)
		pe.readKernel(ctx, k, mode, want)
		ex.Ports = append(ex.Ports, pe)
	}
	if err == nil {
		return ex, nil
	}

	// Nothing in the model. What the kernel still has for a ClusterIP of
	// ours is worth showing: rules of an earlier run, or of someone else.
	var kernelErr string
	if q.IsTarget() {
		if c := st.ClusterFor(q.Target.Addr()); c != nil {
			for _, proto := range []model.Protocol{model.TCP, model.UDP, model.SCTP} {
				if q.Protocol != "" && proto != q.Protocol {
					continue
				}
				pe := PortExplanation{Cluster: c.Name, Target: target(q.Target.Addr(), q.Target.Port(), proto), ClusterSynced: c.Synced,
					Endpoints: []Endpoint{}, Excluded: []Excluded{}, Mismatches: []string{}}
				pe.readKernel(ctx, k, mode, proxy.Want{Target: q.Target, Protocol: proto})
				switch {
				case pe.Kernel.Error != "":
					kernelErr = pe.Kernel.Error
				case !pe.Kernel.Empty:
					ex.Ports = append(ex.Ports, pe)
				}
			}
		}
	}
	if len(ex.Ports) == 0 && len(ex.Refused) == 0 {
		if kernelErr != "" {
			return ex, fmt.Errorf("%w; and the kernel could not be read for rules left behind: %s", err, kernelErr)
		}
		return ex, err
	}
	ex.Notes = append(ex.Notes, firstUpper(err.Error()))
	return ex, nil
}

// desired is the model's side of one port; want has its endpoints, in
// order, with the shares the mode gives them.
func desired(m model.Match, want proxy.Want) PortExplanation {
	p := m.Port
	pe := PortExplanation{
		Key:                       p.Key.String(),
		Cluster:                   p.Key.Cluster,
		Service:                   p.Key.Namespace + "/" + p.Key.Name,
		Target:                    target(m.Addr, p.Port, p.Key.Protocol),
		ClusterSynced:             m.Cluster.Synced,
		ClusterLastKnownStateFrom: m.Cluster.LastKnown,
		InModel:                   true,
		Affinity:                  Duration(p.Affinity),
		NoEndpointsReason:         p.NoEndpointsReason,
		Endpoints:                 []Endpoint{},
		Excluded:                  []Excluded{},
		Mismatches:                []string{},
	}
	if m.Addr != p.ClusterIP {
		pe.ClusterIP = p.ClusterIP.String()
	}
	for _, ip := range p.ExternalIPs {
		pe.ExternalIPs = append(pe.ExternalIPs, ip.String())
	}
	for i, e := range want.Endpoints {
		pe.Endpoints = append(pe.Endpoints, Endpoint{Addr: e.Addr, Terminating: p.Endpoints[i].Terminating,
			Probability: e.Probability, Weight: e.Weight})
	}
	for _, e := range p.Excluded {
		// An address that did not parse is the apiserver's text, as long
		// as it made it.
		pe.Excluded = append(pe.Excluded, Excluded{Addr: bound(e.String()), Reason: string(e.Reason), Detail: bound(e.Detail)})
	}
	return pe
}

func target(ip netip.Addr, port uint16, proto model.Protocol) string {
	return netip.AddrPortFrom(ip, port).String() + "/" + string(proto)
}

// readKernel fills the kernel's side of pe and what differs from the
// model's want.
func (pe *PortExplanation) readKernel(ctx context.Context, k proxy.Explainer, mode string, want proxy.Want) {
	pe.Kernel = KernelView{Mode: mode, Lines: []string{}, Endpoints: []proxy.KernelEndpoint{}}
	v, err := k.ExplainPort(ctx, want)
	if err == nil && v.Detail != nil {
		pe.Kernel.Detail, err = json.Marshal(v.Detail)
	}
	if err != nil {
		pe.Kernel.Error = bound(err.Error())
		return
	}
	if v.Lines != nil {
		pe.Kernel.Lines = v.Lines
	}
	if v.Endpoints != nil {
		pe.Kernel.Endpoints = v.Endpoints
	}
	pe.Kernel.Empty = v.Empty
	pe.Mismatches = append(pe.Mismatches, v.Mismatches...)
	pe.Notes = append(pe.Notes, v.Notes...)
}

func firstUpper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
