package ipvs

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// plan is what one sync found and wants, for this Proxier's family.
type plan struct {
	// bound are our addresses on outpost0.
	bound map[netip.Addr]bool
	// wantVIPs are the ClusterIPs of synced clusters, with endpoints or
	// not: each is bound, so that its other ports are refused.
	wantVIPs map[netip.Addr]bool
	// keptVIPs are bound addresses in the service CIDRs of clusters that
	// have not synced yet: they stay, with their virtual servers, as they
	// are.
	keptVIPs map[netip.Addr]bool
	// want are the virtual servers of service ports with endpoints.
	want map[ServiceKey]*wanted
	// have are our virtual servers in the kernel, kept ones excepted.
	have map[ServiceKey]*VirtualServer
	// kept are the virtual servers on keptVIPs.
	kept map[ServiceKey]bool
}

// wanted is one virtual server as the desired state has it.
type wanted struct {
	svc   Service
	dests []netip.AddrPort // sorted
	name  string           // the service port, for logs
}

// plan compares the desired state with what the kernel holds.
func (p *Proxier) plan(st *model.State, addrs []netip.Addr, vss []VirtualServer) *plan {
	pl := &plan{
		bound:    map[netip.Addr]bool{},
		wantVIPs: map[netip.Addr]bool{},
		keptVIPs: map[netip.Addr]bool{},
		want:     map[ServiceKey]*wanted{},
		have:     map[ServiceKey]*VirtualServer{},
		kept:     map[ServiceKey]bool{},
	}
	for _, a := range addrs {
		if p.bindable(a) {
			pl.bound[a] = true
		}
	}
	for _, c := range st.Clusters {
		if !c.Synced {
			// Clusters' service CIDRs never overlap: what lies in this
			// cluster's is this cluster's.
			for a := range pl.bound {
				if inAny(c.ServiceCIDRs, a) {
					pl.keptVIPs[a] = true
				}
			}
			continue
		}
		keys := slices.SortedFunc(maps.Keys(c.Ports), model.PortKey.Compare)
		for _, key := range keys {
			sp := c.Ports[key]
			if !sp.ClusterIP.IsValid() || !p.family(sp.ClusterIP) {
				continue
			}
			pl.wantVIPs[sp.ClusterIP] = true
			w := p.wanted(sp)
			if w == nil {
				continue
			}
			if old := pl.want[w.svc.ServiceKey]; old != nil {
				p.log.Warn("two service ports have the same ClusterIP, port and protocol; programming the first",
					"first", old.name, "ignored", w.name)
				continue
			}
			pl.want[w.svc.ServiceKey] = w
		}
	}
	for a := range pl.wantVIPs {
		delete(pl.keptVIPs, a)
	}
	for i := range vss {
		vs := &vss[i]
		switch {
		case !p.family(vs.VIP):
		case pl.keptVIPs[vs.VIP]:
			pl.kept[vs.ServiceKey] = true
		case pl.bound[vs.VIP] || pl.wantVIPs[vs.VIP]:
			// A virtual server on a ClusterIP we are about to bind is ours
			// too: the address is in our service CIDRs.
			pl.have[vs.ServiceKey] = vs
		}
	}
	return pl
}

// wanted returns the virtual server of a service port, nil when it has no
// endpoints (then the port is refused by the filter rules).
func (p *Proxier) wanted(sp *model.ServicePort) *wanted {
	w := &wanted{
		svc: Service{
			ServiceKey: ServiceKey{VIP: sp.ClusterIP, Port: sp.Port, Protocol: sp.Key.Protocol},
			Scheduler:  p.opt.Scheduler,
		},
		name: sp.Key.String(),
	}
	if sp.Affinity > 0 {
		// ClientIP affinity is IPVS persistence, as in kube-proxy.
		w.svc.Persistent = true
		w.svc.Timeout = uint32(max(1, int64(sp.Affinity.Seconds())))
	}
	for _, ep := range sp.Endpoints {
		if p.family(ep.Addr.Addr()) && !slices.Contains(w.dests, ep.Addr) {
			w.dests = append(w.dests, ep.Addr)
		}
	}
	if len(w.dests) == 0 {
		return nil
	}
	slices.SortFunc(w.dests, netip.AddrPort.Compare)
	return w
}

func inAny(cidrs []netip.Prefix, a netip.Addr) bool {
	for _, c := range cidrs {
		if c.Contains(a) {
			return true
		}
	}
	return false
}

// interimVIPs are the VIPs to refuse on while the kernel changes: those
// bound now and those about to be.
func (pl *plan) interimVIPs() setContent {
	m := map[string]bool{}
	for _, set := range []map[netip.Addr]bool{pl.bound, pl.wantVIPs, pl.keptVIPs} {
		for a := range set {
			m[a.String()] = true
		}
	}
	return newSetContent(m)
}

// interimPorts are the ports to let through while the kernel changes: the
// virtual servers that exist now and stay.
func (pl *plan) interimPorts() setContent {
	m := map[string]bool{}
	for k := range pl.have {
		if pl.want[k] != nil {
			m[portMember(k)] = true
		}
	}
	for k := range pl.kept {
		m[portMember(k)] = true
	}
	return newSetContent(m)
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	return slices.SortedFunc(maps.Keys(m), netip.Addr.Compare)
}

func sortedKeys[V any](m map[ServiceKey]V) []ServiceKey {
	return slices.SortedFunc(maps.Keys(m), ServiceKey.compare)
}
