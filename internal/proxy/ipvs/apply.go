package ipvs

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// result is what apply did.
type result struct {
	// vips and ports are what the ipsets must hold afterwards: the VIPs
	// still bound or wanted, and the wanted virtual servers that exist.
	vips, ports setContent
	// nodes is what the NODEPORTS set must hold: the node ports served,
	// kept, or whose virtual server could not be deleted.
	nodes   setContent
	errs    []error
	changes int
}

func (r *result) did(err error) bool {
	if err != nil {
		r.errs = append(r.errs, err)
		return false
	}
	r.changes++
	return true
}

// apply makes the kernel match pl. It goes on past a failed operation, so
// that one bad service does not hold back the others, and returns every
// error. Order matters for traffic in flight: addresses are bound before
// the virtual servers that use them, a service's new destinations are added
// before its old ones go, and an address is unbound only once every virtual
// server on it is gone (else it would stop being ours).
func (p *Proxier) apply(pl *plan) result {
	k := p.opt.Kernel
	var r result
	vips := map[netip.Addr]bool{}
	present := map[ServiceKey]bool{}

	for _, a := range sortedAddrs(pl.wantVIPs) {
		vips[a] = true
		if !pl.bound[a] && r.did(k.AddAddr(a)) {
			p.log.Debug("bound ClusterIP", "addr", a)
		}
	}
	for a := range pl.keptVIPs {
		vips[a] = true
	}

	stuck := map[netip.Addr]bool{} // VIPs with a virtual server we failed to delete
	stuckNodes := map[string]bool{}
	for _, key := range sortedKeys(pl.have) {
		if pl.want[key] != nil {
			continue
		}
		// A service without endpoints goes at once, connections and all,
		// as kube-proxy does.
		if r.did(k.DelService(pl.have[key].Service)) {
			p.log.Debug("deleted virtual server", "service", key)
		} else if pl.nodeHave[key] {
			stuckNodes[portMember(key)] = true // still there: still ours
		} else {
			stuck[key.VIP] = true
		}
	}

	now := p.opt.Clock.Now()
	zeroed := map[destKey]time.Time{}
	for _, key := range sortedKeys(pl.want) {
		w, vs := pl.want[key], pl.have[key]
		if vs == nil {
			if !r.did(k.AddService(w.svc)) {
				continue
			}
			p.log.Debug("added virtual server", "service", w.name, "vs", w.svc)
			vs = &VirtualServer{Service: w.svc}
		} else if !vs.sameConfig(w.svc) && r.did(k.UpdateService(w.svc)) {
			p.log.Debug("updated virtual server", "service", w.name, "vs", w.svc)
		}
		present[key] = true
		p.syncDests(w, vs, now, zeroed, &r)
	}
	p.zeroed = zeroed

	for _, a := range sortedAddrs(pl.bound) {
		if vips[a] {
			continue
		}
		if stuck[a] || !r.did(k.DelAddr(a)) {
			vips[a] = true // still bound: still refused
			continue
		}
		p.log.Debug("unbound ClusterIP", "addr", a)
	}

	vm, pm := map[string]bool{}, map[string]bool{}
	for a := range vips {
		vm[a.String()] = true
	}
	for key := range present {
		pm[portMember(key)] = true
	}
	for key := range pl.kept {
		pm[portMember(key)] = true
	}
	r.vips, r.ports = newSetContent(vm), newSetContent(pm)
	nm := stuckNodes
	for _, set := range []map[string]bool{pl.wantNodes, pl.keptNodes} {
		for m := range set {
			nm[m] = true
		}
	}
	r.nodes = newSetContent(nm)
	return r
}

// syncDests makes the destinations of one virtual server match w. A
// destination that is no longer wanted drains first when its protocol has
// connections that end (TCP, SCTP): weight 0 takes it out of scheduling,
// its open connections go on, and it is deleted once they are gone or
// GracefulTimeout after it was zeroed. A UDP "connection" never ends, so a
// UDP destination goes at once.
func (p *Proxier) syncDests(w *wanted, vs *VirtualServer, now time.Time, zeroed map[destKey]time.Time, r *result) {
	k := p.opt.Kernel
	s := w.svc
	have := map[netip.AddrPort]Destination{}
	for _, d := range vs.Destinations {
		have[d.Addr] = d
	}

	// New destinations first, so that the service never runs out.
	for _, a := range w.dests {
		d, ok := have[a]
		switch {
		case !ok:
			if r.did(k.AddDest(s, Destination{Addr: a, Weight: 1})) {
				p.log.Debug("added destination", "service", w.name, "dest", a)
			}
		case d.Weight != 1:
			// Back before it was deleted, or changed by someone else.
			d.Weight = 1
			if r.did(k.UpdateDest(s, d)) {
				p.log.Debug("restored destination", "service", w.name, "dest", a)
			}
		}
	}

	drains := s.Protocol == model.TCP || s.Protocol == model.SCTP
	byAddr := func(a, b Destination) int { return a.Addr.Compare(b.Addr) }
	for _, d := range slices.SortedFunc(maps.Values(have), byAddr) {
		// w.dests is sorted: a binary search, where a scan made a sync
		// quadratic in the destinations.
		if _, wanted := slices.BinarySearchFunc(w.dests, d.Addr, netip.AddrPort.Compare); wanted {
			continue
		}
		dk := destKey{svc: s.ServiceKey, dest: d.Addr}
		since, seen := p.zeroed[dk]
		if !seen {
			since = now // a restart forgot when: start the clock now
		}
		del := !drains || d.ActiveConns+d.InactiveConns == 0 || now.Sub(since) >= p.opt.GracefulTimeout
		if del {
			if r.did(k.DelDest(s, d)) {
				p.log.Debug("deleted destination", "service", w.name, "dest", d.Addr)
				continue
			}
		} else if d.Weight != 0 {
			d.Weight = 0
			if r.did(k.UpdateDest(s, d)) {
				p.log.Debug("draining destination", "service", w.name, "dest", d.Addr,
					"active", d.ActiveConns, "inactive", d.InactiveConns)
			}
		}
		if drains {
			zeroed[dk] = since
		}
	}
}
