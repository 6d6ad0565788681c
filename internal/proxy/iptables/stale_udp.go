package iptables

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// StaleUDP forgets the UDP flows to endpoints that the rules a sync
// committed no longer send them to, and the flows of any protocol that
// left without DNAT for a VIP the sync gave endpoints to (Conntrack says
// why), all in one batch per sync. It is
// shared by the modes whose DNAT leaves conntrack entries behind (this
// one and nftables mode); T is what a mode keeps of a programmed port,
// and View says which port it is and whether its node port is served.
// Failures are logged, not returned: the rules are right, and the flows
// time out on their own.
//
// Only what this process programmed is compared, so a restarted daemon's
// first sync forgets nothing. A cluster that is not synced keeps its rules
// (and so its flows): its ports wait in held until it syncs again, and
// are compared then.
type StaleUDP[T comparable] struct {
	Conntrack Conntrack
	Log       *slog.Logger
	View      func(T) (port *model.ServicePort, nodePort bool)
	// hostAddrs are this family's addresses that node ports were served
	// at in the last sync.
	hostAddrs []netip.Addr
	held      map[model.PortKey]T
	// flushed says the mode's probe found our rules gone: every flow to
	// a VIP since then left without DNAT, not only those to ports the
	// next sync newly serves. Set beside Sync, hence atomic.
	flushed atomic.Bool
}

// Flushed says that the rules were found gone behind our back (a
// firewall reload). A connection tried since then left without DNAT, and
// conntrack holds it so: its client's retransmissions, which reuse the
// entry, stay un-NATed after the repair until the client gives up. The
// sync that repairs the rules therefore forgets such flows for every VIP
// it serves. The probe calls it; Sync takes it with TakeFlushed.
func (s *StaleUDP[T]) Flushed() { s.flushed.Store(true) }

// TakeFlushed returns and clears what Flushed said, at the start of a
// sync: a flush found while the sync runs is for the next one, the
// repair. A sync that fails gives it back with Flushed.
func (s *StaleUDP[T]) TakeFlushed() bool { return s.flushed.Swap(false) }

// Forget compares what the last successful sync programmed (applied)
// with what this one did (next); kept says which clusters' objects stay
// as they are. hostAddrs are where node ports are served now. flushed is
// what TakeFlushed said at the start of this sync: every VIP then counts
// as newly served.
func (s *StaleUDP[T]) Forget(ctx context.Context, applied, next map[model.PortKey]T, kept func(cluster string) bool, hostAddrs []netip.Addr, flushed bool) {
	defer func() { s.hostAddrs = hostAddrs }()
	if s.Conntrack == nil {
		return
	}
	hosts := make(map[netip.Addr]bool, len(hostAddrs))
	for _, a := range hostAddrs {
		hosts[a] = true
	}
	// Node port flows came in at any address of this host the port was
	// served at, then or now.
	nodeAddrs := slices.Compact(slices.SortedFunc(slices.Values(append(slices.Clone(s.hostAddrs), hostAddrs...)), netip.Addr.Compare))
	held := map[model.PortKey]T{}
	var flows []Flow
	ports := 0
	for _, before := range []map[model.PortKey]T{applied, s.held} {
		for key, old := range before {
			// The protocol first: View may cost, and it is asked of every
			// port at every sync.
			if key.Protocol != model.UDP {
				continue
			}
			if oldPort, _ := s.View(old); len(oldPort.Endpoints) == 0 {
				continue
			}
			if kept(key.Cluster) {
				held[key] = old
				continue
			}
			n := len(flows)
			cur, ok := next[key]
			if ok && cur == old {
				continue
			}
			flows = s.staleFlows(flows, old, cur, ok, hosts, nodeAddrs)
			if len(flows) > n {
				ports++
			}
		}
	}
	s.held = held
	before := []map[model.PortKey]T{applied, s.held}
	if flushed {
		before = nil
	}
	f := Forget{UDP: flows, Undiverted: s.undiverted(before, next)}
	if f.Empty() {
		return
	}
	if err := s.Conntrack.Clear(ctx, f); err != nil {
		s.Log.Warn("could not forget UDP flows to removed endpoints, or flows that left before their service's rules; they time out on their own",
			"flows", len(flows), "ports", ports, "undiverted", len(f.Undiverted), "err", err)
	}
}

// undiverted returns the VIPs and ports next sends to endpoints that
// none of before did: flows to them that conntrack holds without DNAT
// left before the rules were there. Only VIPs: a flow to an external IP or
// a node port without DNAT may be a live connection to that address's own
// host or listener, which forgetting its entry would break mid-stream.
func (s *StaleUDP[T]) undiverted(before []map[model.PortKey]T, next map[model.PortKey]T) []Portal {
	var out []Portal
	for key, cur := range next {
		// A port programmed as it was diverted then as it does now, or
		// had no endpoints and still has none: the common case, at no
		// more than a map lookup, before View.
		if slices.ContainsFunc(before, func(b map[model.PortKey]T) bool { old, ok := b[key]; return ok && old == cur }) {
			continue
		}
		curPort, _ := s.View(cur)
		if len(curPort.Endpoints) == 0 {
			continue
		}
		portal := Portal{Protocol: key.Protocol, Addr: netip.AddrPortFrom(curPort.VIP(), curPort.Port)}
		if slices.ContainsFunc(before, func(b map[model.PortKey]T) bool { return diverts(s.View, b, key, portal) }) {
			continue
		}
		out = append(out, portal)
	}
	return out
}

// diverts says whether before sent portal to endpoints as key.
func diverts[T comparable](view func(T) (*model.ServicePort, bool), before map[model.PortKey]T, key model.PortKey, portal Portal) bool {
	old, ok := before[key]
	if !ok {
		return false
	}
	p, _ := view(old)
	return len(p.Endpoints) > 0 && p.VIP() == portal.Addr.Addr() && p.Port == portal.Addr.Port()
}

// Reset forgets what was programmed: after a cleanup, nothing is.
func (s *StaleUDP[T]) Reset() { s.held, s.hostAddrs = nil, nil }

// staleFlows appends the flows old sent that cur (none when !ok) no
// longer sends the same way.
func (s *StaleUDP[T]) staleFlows(flows []Flow, old, cur T, ok bool, hosts map[netip.Addr]bool, nodeAddrs []netip.Addr) []Flow {
	oldPort, oldNode := s.View(old)
	var vips []netip.AddrPort
	for _, a := range oldPort.Addrs() {
		vips = append(vips, netip.AddrPortFrom(a, oldPort.Port))
	}
	if oldNode {
		for _, a := range nodeAddrs {
			vips = append(vips, netip.AddrPortFrom(a, oldPort.ServedNodePort))
		}
	}
	var kept keptFlows
	if ok {
		curPort, curNode := s.View(cur)
		kept = keptFlowsOf(curPort, curNode, hosts)
	}
	for _, vip := range vips {
		for _, ep := range oldPort.Endpoints {
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

// keptFlowsOf is the flows of cur, whose node port is served when
// nodePort is set.
func keptFlowsOf(cur *model.ServicePort, nodePort bool, hosts map[netip.Addr]bool) keptFlows {
	k := keptFlows{port: cur.Port, addrs: map[netip.Addr]bool{}, hosts: hosts,
		eps: make(map[netip.AddrPort]bool, len(cur.Endpoints))}
	for _, a := range cur.Addrs() {
		k.addrs[a] = true
	}
	if nodePort {
		k.nodePort = cur.ServedNodePort
	}
	for _, e := range cur.Endpoints {
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
