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
	// wantVIPs are the ClusterIPs of clusters whose ports are known
	// (synced, or a last known state), with endpoints or not: each is
	// bound, so that its other ports are refused.
	wantVIPs map[netip.Addr]bool
	// keptVIPs are bound addresses in the service CIDRs of clusters whose
	// ports are not known yet: they stay, with their virtual servers, as
	// they are.
	keptVIPs map[netip.Addr]bool
	// want are the virtual servers of service ports with endpoints.
	want map[ServiceKey]*wanted
	// have are our virtual servers in the kernel, kept ones excepted.
	have map[ServiceKey]*VirtualServer
	// kept are the virtual servers on keptVIPs, and at kept node ports.
	kept map[ServiceKey]bool

	// Served node ports, as NODEPORTS members (address,proto:port).
	// oldNodes were served before this sync (the set as it was);
	// wantNodes are served by synced clusters now; keptNodes are old ones
	// kept because a cluster that serves node ports has not synced yet.
	oldNodes, wantNodes, keptNodes map[string]bool
	// nodeHave are the keys of have that are node port virtual servers.
	nodeHave map[ServiceKey]bool
}

// wanted is one virtual server as the desired state has it.
type wanted struct {
	svc   Service
	dests []netip.AddrPort // sorted
	name  string           // the service port, for logs
}

// plan compares the desired state with what the kernel holds.
func (p *Proxier) plan(st *model.State, addrs []netip.Addr, vss []VirtualServer, oldNodes setContent) *plan {
	pl := &plan{
		bound:     map[netip.Addr]bool{},
		wantVIPs:  map[netip.Addr]bool{},
		keptVIPs:  map[netip.Addr]bool{},
		want:      map[ServiceKey]*wanted{},
		have:      map[ServiceKey]*VirtualServer{},
		kept:      map[ServiceKey]bool{},
		oldNodes:  map[string]bool{},
		wantNodes: map[string]bool{},
		keptNodes: map[string]bool{},
		nodeHave:  map[ServiceKey]bool{},
	}
	for _, m := range oldNodes {
		pl.oldNodes[m] = true
	}
	hostAddrs := model.NodePortAddrs(st.HostAddrs, p.opt.IPv6)
	keepNodes := false
	for _, a := range addrs {
		if p.bindable(a) {
			pl.bound[a] = true
		}
	}
	for _, c := range st.Clusters {
		if !c.PortsKnown() && p.servesNodePorts(c) {
			// Which of the old node ports are this cluster's is not
			// known: all that no synced cluster takes stay.
			keepNodes = true
		}
		if !c.PortsKnown() {
			// Clusters' VIP ranges never overlap: what lies in this
			// cluster's is this cluster's. So may a bound address in its
			// allow_external_ips be; one that a synced cluster wants is
			// taken back below.
			for a := range pl.bound {
				if inAny(c.Ranges(), a) || inAny(c.AllowExternalIPs, a) {
					pl.keptVIPs[a] = true
				}
			}
			continue
		}
		keys := slices.SortedFunc(maps.Keys(c.Ports), model.PortKey.Compare)
		for _, key := range keys {
			sp := c.Ports[key]
			if !sp.ClusterIP.IsValid() || !p.family(sp.VIP()) {
				continue
			}
			// External IPs are bound like VIPs: binding one makes this
			// host take the packets to it, which is what
			// allow_external_ips asks for, on this host only.
			for _, addr := range sp.Addrs() {
				if !p.family(addr) {
					continue
				}
				pl.wantVIPs[addr] = true
				w := p.wanted(sp, addr)
				if w == nil {
					continue
				}
				if old := pl.want[w.svc.ServiceKey]; old != nil {
					p.log.Warn("two service ports have the same address, port and protocol; programming the first",
						"first", old.name, "ignored", w.name)
					continue
				}
				pl.want[w.svc.ServiceKey] = w
			}
			if p.servesNodePorts(c) && sp.ServedNodePort != 0 {
				p.planNodePort(pl, sp, hostAddrs)
			}
		}
	}
	for a := range pl.wantVIPs {
		delete(pl.keptVIPs, a)
	}
	if keepNodes {
		for m := range pl.oldNodes {
			if !pl.wantNodes[m] {
				pl.keptNodes[m] = true
			}
		}
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
		case pl.keptNodes[portMember(vs.ServiceKey)]:
			pl.kept[vs.ServiceKey] = true
		case pl.oldNodes[portMember(vs.ServiceKey)] || pl.wantNodes[portMember(vs.ServiceKey)]:
			// Served before, or about to be: one at a node port we
			// serve now is taken over, as a VIP's is.
			pl.have[vs.ServiceKey] = vs
			pl.nodeHave[vs.ServiceKey] = true
		}
	}
	return pl
}

// planNodePort adds a served node port: a NODEPORTS member at each of this
// host's addresses, and there a virtual server when it has endpoints.
func (p *Proxier) planNodePort(pl *plan, sp *model.ServicePort, hostAddrs []netip.Addr) {
	for _, a := range hostAddrs {
		k := ServiceKey{VIP: a, Port: sp.ServedNodePort, Protocol: sp.Key.Protocol}
		pl.wantNodes[portMember(k)] = true
		w := p.wantedAt(sp, a, sp.ServedNodePort)
		if w == nil {
			continue
		}
		w.name += " node port"
		if old := pl.want[k]; old != nil {
			p.log.Warn("two service ports have the same address, port and protocol; programming the first",
				"first", old.name, "ignored", w.name)
			continue
		}
		pl.want[k] = w
	}
}

// wanted returns the virtual server of a service port at addr (its VIP or
// an external IP), nil when it has no endpoints (then the port is refused
// by the filter rules).
func (p *Proxier) wanted(sp *model.ServicePort, addr netip.Addr) *wanted {
	return p.wantedAt(sp, addr, sp.Port)
}

// wantedAt is wanted at another port: a node port.
func (p *Proxier) wantedAt(sp *model.ServicePort, addr netip.Addr, port uint16) *wanted {
	w := &wanted{
		svc: Service{
			ServiceKey: ServiceKey{VIP: addr, Port: port, Protocol: sp.Key.Protocol},
			Scheduler:  p.opt.Scheduler,
		},
		name: sp.Key.String(),
	}
	if sp.Affinity > 0 {
		// ClientIP affinity is IPVS persistence, as in kube-proxy.
		w.svc.Persistent = true
		w.svc.Timeout = uint32(max(1, int64(sp.Affinity.Seconds())))
	}
	// Sorted, then compacted: linear after the sort, where a lookup in
	// the list for each endpoint made a sync quadratic in them.
	w.dests = make([]netip.AddrPort, 0, len(sp.Endpoints))
	for _, ep := range sp.Endpoints {
		if p.family(ep.Addr.Addr()) {
			w.dests = append(w.dests, ep.Addr)
		}
	}
	if len(w.dests) == 0 {
		return nil
	}
	slices.SortFunc(w.dests, netip.AddrPort.Compare)
	w.dests = slices.Compact(w.dests)
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

// interimNodes are the node ports to refuse at while the kernel changes:
// those served before and those about to be (a port whose virtual server
// does not exist yet is refused, as a VIP's).
func (pl *plan) interimNodes() setContent {
	m := map[string]bool{}
	for _, set := range []map[string]bool{pl.oldNodes, pl.wantNodes, pl.keptNodes} {
		for k := range set {
			m[k] = true
		}
	}
	return newSetContent(m)
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	return slices.SortedFunc(maps.Keys(m), netip.Addr.Compare)
}

func sortedKeys[V any](m map[ServiceKey]V) []ServiceKey {
	return slices.SortedFunc(maps.Keys(m), ServiceKey.compare)
}
