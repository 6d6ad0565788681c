package status

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
)

// Kernel reads the kernel's side of an explanation. The daemon fills it
// from its mode; tests from fakes.
type Kernel struct {
	Mode string // "iptables" or "ipvs"
	// IPTables returns the iptables runner of a family, nil when the
	// daemon programs nothing in that family (iptables mode).
	IPTables func(ipv6 bool) iptables.Runner
	// IPVS and Scheduler are ipvs mode's kernel and configured scheduler.
	IPVS      ipvs.Kernel
	Scheduler string
}

// shareTolerance is how far a kernel's share may be from the model's:
// iptables keeps probabilities as 31-bit fractions and prints 11 digits.
const shareTolerance = 1e-4

// BuildExplanation explains q from the desired state st, the refusals the
// model reported (Store.Refusals) and the kernel. Its error wraps
// model.ErrNotFound when there is nothing to explain: no service port in
// the model, no refusal of the service, and no rule in the kernel.
func BuildExplanation(ctx context.Context, st *model.State, refusals []model.Refusal, q model.Query, k Kernel) (Explanation, error) {
	ex := Explanation{Query: q.String(), Mode: k.Mode, Ports: []PortExplanation{}}
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
		if !m.Cluster.Synced && !unsynced[m.Cluster.Name] {
			unsynced[m.Cluster.Name] = true
			ex.Notes = append(ex.Notes, fmt.Sprintf("cluster %q has not synced yet: the kernel keeps the rules of an earlier run, "+
				"and the model may lack services it has not listed yet", m.Cluster.Name))
		}
		pe := desired(m, k.Mode)
		k.read(ctx, &pe, &m.Port.Key, m.Addr, m.Port.Port, m.Port.Key.Protocol)
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
				k.read(ctx, &pe, nil, q.Target.Addr(), q.Target.Port(), proto)
				switch {
				case pe.Kernel.Error != "":
					kernelErr = pe.Kernel.Error
				case !pe.Kernel.empty():
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

// desired is the model's side of one port.
func desired(m model.Match, mode string) PortExplanation {
	p := m.Port
	pe := PortExplanation{
		Key:               p.Key.String(),
		Cluster:           p.Key.Cluster,
		Service:           p.Key.Namespace + "/" + p.Key.Name,
		Target:            target(m.Addr, p.Port, p.Key.Protocol),
		ClusterSynced:     m.Cluster.Synced,
		InModel:           true,
		Affinity:          Duration(p.Affinity),
		NoEndpointsReason: p.NoEndpointsReason,
		Endpoints:         []Endpoint{},
		Excluded:          []Excluded{},
		Mismatches:        []string{},
	}
	if m.Addr != p.ClusterIP {
		pe.ClusterIP = p.ClusterIP.String()
	}
	for _, ip := range p.ExternalIPs {
		pe.ExternalIPs = append(pe.ExternalIPs, ip.String())
	}
	for _, e := range p.Endpoints {
		ep := Endpoint{Addr: e.Addr, Terminating: e.Terminating}
		// The shares the backends give: iptables an equal probability,
		// IPVS weight 1 for every endpoint.
		switch mode {
		case "ipvs":
			ep.Weight = 1
		default:
			ep.Probability = 1 / float64(len(p.Endpoints))
		}
		pe.Endpoints = append(pe.Endpoints, ep)
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

// read fills the kernel's side of pe and what differs from the model's;
// key is nil for a port the model does not have.
func (k Kernel) read(ctx context.Context, pe *PortExplanation, key *model.PortKey, ip netip.Addr, port uint16, proto model.Protocol) {
	vip := netip.AddrPortFrom(ip, port)
	switch k.Mode {
	case "ipvs":
		if k.IPVS == nil {
			pe.Kernel.Error = "no IPVS handle"
			return
		}
		v, err := ipvs.ReadPort(k.IPVS, vip, proto)
		if err != nil {
			pe.Kernel.Error = bound(err.Error())
			return
		}
		pe.Kernel.IPVS = ipvsView(v)
		pe.compareIPVS(v, k.Scheduler)
	default:
		var r iptables.Runner
		if k.IPTables != nil {
			r = k.IPTables(ip.Is6())
		}
		if r == nil {
			family := "IPv4"
			if ip.Is6() {
				family = "IPv6"
			}
			pe.Kernel.Error = "kube-outpost programs no " + family + " iptables rules on this host"
			return
		}
		v, err := iptables.ReadPort(ctx, r, vip, proto)
		if err != nil {
			pe.Kernel.Error = bound(err.Error())
			return
		}
		pe.Kernel.IPTables = iptablesView(v)
		pe.compareIPTables(v, key)
	}
}

func (kv KernelView) empty() bool {
	if v := kv.IPTables; v != nil {
		return len(v.Dispatch)+len(v.Reject) == 0
	}
	if v := kv.IPVS; v != nil {
		return v.Server == nil
	}
	return true
}

func rules(rs []iptables.Rule) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, "-t "+r.Table+" "+r.String())
	}
	return out
}

func iptablesView(v *iptables.PortView) *IPTablesView {
	out := &IPTablesView{
		Path: rules(v.Path), Dispatch: rules(v.Dispatch), Chain: v.Chain, Rules: rules(v.Rules),
		Endpoints: []KernelEndpoint{}, NotDNATed: v.NotDNATed, AffinitySeconds: v.AffinitySeconds,
		RejectPath: rules(v.RejectPath), Reject: rules(v.Reject),
	}
	for _, e := range v.Endpoints {
		out.Endpoints = append(out.Endpoints, KernelEndpoint{Addr: e.Addr, Probability: e.Probability})
	}
	return out
}

func ipvsView(v *ipvs.PortView) *IPVSView {
	out := &IPVSView{Bound: v.Bound}
	if s := v.Server; s != nil {
		out.Server = &VirtualServer{Scheduler: s.Scheduler, Persistent: s.Persistent, Destinations: []Destination{}}
		if s.Persistent {
			out.Server.TimeoutSeconds = s.Timeout
		}
		for _, d := range s.Destinations {
			out.Server.Destinations = append(out.Server.Destinations,
				Destination{Addr: d.Addr, Weight: d.Weight, ActiveConns: d.ActiveConns, InactiveConns: d.InactiveConns})
		}
	}
	return out
}

func (pe *PortExplanation) mismatch(format string, args ...any) {
	pe.Mismatches = append(pe.Mismatches, fmt.Sprintf(format, args...))
}

// compareIPTables lists how the rules differ from what the iptables backend
// writes for the model's port.
func (pe *PortExplanation) compareIPTables(v *iptables.PortView, key *model.PortKey) {
	if key == nil {
		switch {
		case len(v.Dispatch) > 0:
			pe.mismatch("the kernel still sends %s to %s, but the model has no such service port", pe.Target, v.Chain)
		case len(v.Reject) > 0:
			pe.mismatch("the kernel still refuses %s, but the model has no such service port", pe.Target)
		}
		return
	}
	if len(pe.Endpoints) == 0 {
		if !hooked(v.RejectPath, "OUTPUT", "OUTPOST-FILTER") {
			pe.mismatch("no rule of filter OUTPUT jumps to OUTPOST-FILTER: ports without endpoints are not refused")
		}
		if len(v.Reject) == 0 {
			pe.mismatch("no reject rule for %s: connections are not refused, they time out or reach whatever else answers", pe.Target)
		}
		if len(v.Dispatch) > 0 {
			pe.mismatch("a dispatch rule still sends %s to %s, although it has no endpoints", pe.Target, v.Chain)
		}
		return
	}
	if !hooked(v.Path, "OUTPUT", "OUTPOST-SERVICES") {
		pe.mismatch("no rule of nat OUTPUT jumps to OUTPOST-SERVICES: local processes reach no ClusterIP")
	}
	if !hooked(v.Path, "PREROUTING", "OUTPOST-PREROUTING") {
		pe.mismatch("no rule of nat PREROUTING jumps to OUTPOST-PREROUTING: hosts routed through this one reach no ClusterIP, not even those in routed_clients")
	}
	if !slices.ContainsFunc(v.Path, func(r iptables.Rule) bool { return r.Chain == "OUTPOST-SERVICES" }) {
		pe.mismatch("OUTPOST-SERVICES has no rule for the service range of %s", pe.Target)
	}
	if len(v.Reject) > 0 {
		pe.mismatch("a reject rule for %s is left in the filter table, although it has endpoints", pe.Target)
	}
	switch n := len(v.Dispatch); {
	case n == 0:
		pe.mismatch("no dispatch rule matches %s: packets to it are not translated", pe.Target)
		return
	case n > 1:
		pe.mismatch("%d dispatch rules match %s; the first one wins", n, pe.Target)
	}
	if want := iptables.ServiceChain(*key); v.Chain != want {
		pe.mismatch("the dispatch rule jumps to %s, not to %s, the chain of this service port", v.Chain, want)
	}
	kernel := map[netip.AddrPort]float64{}
	for _, e := range v.Endpoints {
		kernel[e.Addr] = e.Probability
	}
	for _, e := range pe.Endpoints {
		got, ok := kernel[e.Addr]
		switch {
		case !ok:
			pe.mismatch("endpoint %s is wanted, but no rule DNATs to it", e.Addr)
		case math.Abs(got-e.Probability) > shareTolerance:
			pe.mismatch("endpoint %s gets %s of new connections, not %s", e.Addr, percent(got), percent(e.Probability))
		}
		delete(kernel, e.Addr)
	}
	for _, e := range v.Endpoints {
		if _, extra := kernel[e.Addr]; extra {
			pe.mismatch("the kernel DNATs %s of new connections to %s, which the model does not want", percent(e.Probability), e.Addr)
		}
	}
	if v.NotDNATed > shareTolerance {
		pe.mismatch("%s of new connections leave %s without a DNAT", percent(v.NotDNATed), v.Chain)
	}
	if want := int(math.Round(pe.Affinity.Std().Seconds())); v.AffinitySeconds != want {
		pe.mismatch("ClientIP affinity: the kernel keeps clients %s, the model wants %s", affinityText(v.AffinitySeconds), affinityText(want))
	}
}

func affinityText(secs int) string {
	if secs == 0 {
		return "not at all"
	}
	return fmt.Sprintf("%ds", secs)
}

// hooked says whether path has a rule of a built-in chain that jumps to to.
func hooked(path []iptables.Rule, from, to string) bool {
	return slices.ContainsFunc(path, func(r iptables.Rule) bool {
		return r.Chain == from && strings.HasSuffix(r.Spec, "-j "+to)
	})
}

// compareIPVS lists how IPVS differs from what the ipvs backend programs
// for the model's port.
func (pe *PortExplanation) compareIPVS(v *ipvs.PortView, scheduler string) {
	s := v.Server
	if !pe.InModel {
		if s != nil {
			pe.mismatch("IPVS still has a virtual server for %s, but the model has no such service port", pe.Target)
		}
		return
	}
	if !v.Bound {
		pe.mismatch("%s is not bound to %s: the kernel never hands its packets to IPVS", strings.SplitN(pe.Target, "/", 2)[0], ipvs.Interface)
	}
	if len(pe.Endpoints) == 0 {
		if s != nil {
			pe.mismatch("a virtual server for %s is still there, although it has no endpoints", pe.Target)
		}
		return
	}
	if s == nil {
		pe.mismatch("IPVS has no virtual server for %s", pe.Target)
		return
	}
	if scheduler != "" && s.Scheduler != scheduler {
		pe.mismatch("the virtual server's scheduler is %s, not %s as configured", s.Scheduler, scheduler)
	}
	wantTimeout := uint32(0)
	if pe.Affinity > 0 {
		wantTimeout = uint32(max(1, int64(math.Round(pe.Affinity.Std().Seconds()))))
	}
	switch {
	case wantTimeout == 0 && s.Persistent:
		pe.mismatch("the virtual server is persistent for %ds, but the service has no ClientIP affinity", s.Timeout)
	case wantTimeout > 0 && (!s.Persistent || s.Timeout != wantTimeout):
		pe.mismatch("the virtual server should be persistent for %ds (ClientIP affinity)", wantTimeout)
	}
	have := map[netip.AddrPort]ipvs.Destination{}
	for _, d := range s.Destinations {
		have[d.Addr] = d
	}
	for _, e := range pe.Endpoints {
		d, ok := have[e.Addr]
		switch {
		case !ok:
			pe.mismatch("endpoint %s is wanted, but the virtual server has no such real server", e.Addr)
		case d.Weight != e.Weight:
			pe.mismatch("real server %s has weight %d, not %d", e.Addr, d.Weight, e.Weight)
		}
		delete(have, e.Addr)
	}
	for _, d := range s.Destinations {
		if _, extra := have[d.Addr]; !extra {
			continue
		}
		if d.Weight == 0 {
			pe.Notes = append(pe.Notes, fmt.Sprintf("%s is draining: weight 0, gets no new connections, and goes when its %d active connections end",
				d.Addr, d.ActiveConns))
			continue
		}
		pe.mismatch("IPVS sends connections to %s at weight %d, which the model does not want", d.Addr, d.Weight)
	}
}

func firstUpper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
