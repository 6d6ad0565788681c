package iptables

import (
	"context"
	"net/netip"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// clearStaleUDP forgets the UDP flows to endpoints that the rules this
// sync committed no longer send them to, all in one batch. Failures are
// logged, not returned: the rules are right, and the flows time out on
// their own.
//
// Only what this process programmed is compared, so a restarted daemon's
// first sync forgets nothing. A cluster that is not synced keeps its rules
// (and so its flows): its ports wait in p.held until it syncs again, and
// are compared then.
func (p *Proxier) clearStaleUDP(ctx context.Context, s *syncPass, hostAddrs []netip.Addr) {
	if p.opt.Conntrack == nil {
		return
	}
	hosts := make(map[netip.Addr]bool, len(hostAddrs))
	for _, a := range hostAddrs {
		hosts[a] = true
	}
	// Node port flows came in at any address of this host the port was
	// served at, then or now.
	nodeAddrs := slices.Compact(slices.SortedFunc(slices.Values(append(slices.Clone(p.hostAddrs), hostAddrs...)), netip.Addr.Compare))
	held := map[model.PortKey]*programmed{}
	var flows []Flow
	ports := 0
	for _, before := range []map[model.PortKey]*programmed{p.applied, p.held} {
		for key, old := range before {
			if key.Protocol != model.UDP || len(old.port.Endpoints) == 0 {
				continue
			}
			if s.keepTags[clusterTag(key.Cluster)] {
				held[key] = old
				continue
			}
			n := len(flows)
			flows = staleFlows(flows, old, s.next[key], hosts, nodeAddrs)
			if len(flows) > n {
				ports++
			}
		}
	}
	p.held = held
	if len(flows) == 0 {
		return
	}
	if err := p.opt.Conntrack.ClearUDP(ctx, flows); err != nil {
		p.log.Warn("could not forget UDP flows to removed endpoints; they time out on their own",
			"flows", len(flows), "ports", ports, "err", err)
	}
}

// staleFlows appends the flows old sent that cur no longer sends the same
// way.
func staleFlows(flows []Flow, old, cur *programmed, hosts map[netip.Addr]bool, nodeAddrs []netip.Addr) []Flow {
	if cur == old {
		return flows
	}
	var vips []netip.AddrPort
	for _, a := range old.port.Addrs() {
		vips = append(vips, netip.AddrPortFrom(a, old.port.Port))
	}
	if old.nodeDispatch != "" {
		for _, a := range nodeAddrs {
			vips = append(vips, netip.AddrPortFrom(a, old.port.ServedNodePort))
		}
	}
	kept := keptFlowsOf(cur, hosts)
	for _, vip := range vips {
		for _, ep := range old.port.Endpoints {
			if !kept.keeps(vip, ep.Addr) {
				flows = append(flows, Flow{VIP: vip, Endpoint: ep.Addr})
			}
		}
	}
	return flows
}

// keptFlows is where a port as programmed now still sends flows, as sets:
// a flow it still sends the same way is still right. Each old endpoint at
// each old address is looked up once, so forgetting the stale ones is
// linear in them; a scan of the endpoints for each made it quadratic.
type keptFlows struct {
	port     uint16
	addrs    map[netip.Addr]bool // the port's VIP and external IPs
	nodePort uint16              // 0 when its node port is not served
	hosts    map[netip.Addr]bool // where the node port is served
	eps      map[netip.AddrPort]bool
}

// keptFlowsOf is cur's flows; cur nil keeps none.
func keptFlowsOf(cur *programmed, hosts map[netip.Addr]bool) keptFlows {
	if cur == nil {
		return keptFlows{}
	}
	k := keptFlows{port: cur.port.Port, addrs: map[netip.Addr]bool{}, hosts: hosts,
		eps: make(map[netip.AddrPort]bool, len(cur.port.Endpoints))}
	for _, a := range cur.port.Addrs() {
		k.addrs[a] = true
	}
	if cur.nodeDispatch != "" {
		k.nodePort = cur.port.ServedNodePort
	}
	for _, e := range cur.port.Endpoints {
		k.eps[e.Addr] = true
	}
	return k
}

// keeps says whether vip, a service address or a node port at one of this
// host's addresses, still leads to ep.
func (k keptFlows) keeps(vip, ep netip.AddrPort) bool {
	atVIP := k.port != 0 && k.port == vip.Port() && k.addrs[vip.Addr()]
	atNode := k.nodePort != 0 && k.nodePort == vip.Port() && k.hosts[vip.Addr()]
	return (atVIP || atNode) && k.eps[ep]
}
