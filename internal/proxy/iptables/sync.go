package iptables

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Sync implements proxy.Backend.
func (p *Proxier) Sync(ctx context.Context, st *model.State, full bool) (err error) {
	defer func() {
		if err != nil {
			// The kernel may hold part of what we think it holds, or
			// someone changed it: the next attempt rewrites everything.
			p.needFull = true
		}
	}()
	clusters := map[string]clusterShape{}
	for _, c := range st.Clusters {
		clusters[c.Name] = clusterShape{synced: c.Synced, nodePorts: p.servesNodePorts(c)}
	}
	// A cluster that appears, goes, turns synced or starts or stops
	// serving node ports has chains whose content this process has not
	// tracked: rewrite all.
	if !maps.Equal(clusters, p.clusters) {
		full = true
	}
	full = full || p.needFull
	if full {
		chains, hooks, err := p.listChains(ctx)
		if err != nil {
			return err
		}
		p.chains, p.hooks = chains, hooks
	}

	tx := newTransaction()
	next := map[model.PortKey]*programmed{}
	keepTags := map[string]bool{}

	// The top chains hold a few rules per cluster: render them every time,
	// write them when they changed.
	top := newTopChains()
	if m := p.opt.MasqueradeMark; m != 0 {
		top.add("nat", chainPostrt, fmt.Sprintf("-m mark ! --mark %#x/%#x -j RETURN", m, m))
		// Clear the bit, so that a packet passing this host twice is not
		// masqueraded again on the second pass.
		top.add("nat", chainPostrt, fmt.Sprintf("-j MARK --xor-mark %#x", m))
		masq := comment("kube-outpost: masquerade proxied traffic") + " -j MASQUERADE"
		if p.opt.Runner.HasRandomFully() {
			masq += " --random-fully"
		}
		top.add("nat", chainPostrt, masq)
	}

	// Routed packets reach the services only from routed_clients. goto,
	// not jump: what OUTPOST-SERVICES does not take has passed its node
	// port rules already, and leaves for the built-in chain.
	for _, cidr := range p.opt.RoutedClients {
		if !p.family(cidr.Addr().Is6()) {
			continue
		}
		cm := comment("routed_clients")
		top.add("nat", chainRouted, fmt.Sprintf("-s %s %s -g %s", cidr, cm, chainServices))
		top.add("filter", chainForward, fmt.Sprintf("-s %s %s -j %s", cidr, cm, chainFilter))
	}

	// Node port rules come after every range: a packet to a service
	// address never reaches them.
	var nodeTop []struct{ table, rule string }
	for _, c := range st.Clusters {
		cChain, rChain := clusterChain(c.Name), rejectChain(c.Name)
		xChain, xrChain := extChain(c.Name), extRejChain(c.Name)
		nChain, nrChain := nodeChain(c.Name), nodeRejChain(c.Name)
		serveNP := p.servesNodePorts(c)
		if serveNP {
			cm := comment("cluster " + c.Name + " node ports")
			local := notLoopback(p.opt.IPv6) + " -m addrtype --dst-type LOCAL"
			if c.Synced || p.chains["nat"][nChain] {
				nodeTop = append(nodeTop, struct{ table, rule string }{"nat", fmt.Sprintf("%s %s -j %s", local, cm, nChain)})
			}
			if c.Synced || p.chains["filter"][nrChain] {
				nodeTop = append(nodeTop, struct{ table, rule string }{"filter",
					fmt.Sprintf("%s -m conntrack --ctstate NEW %s -j %s", local, cm, nrChain)})
			}
			if c.Synced && full {
				tx.declare("nat", nChain)
				tx.declare("filter", nrChain)
			}
		}
		var allowed []netip.Prefix
		for _, cidr := range c.AllowExternalIPs {
			if p.family(cidr.Addr().Is6()) {
				allowed = append(allowed, cidr)
			}
		}
		if !c.Synced {
			// Keep what an earlier run programmed for this cluster.
			keepTags[clusterTag(c.Name)] = true
		} else if full {
			tx.declare("nat", cChain)
			tx.declare("filter", rChain)
		}
		if c.Synced && len(allowed) > 0 {
			// Declaring flushes: in a partial sync, only a chain that
			// does not exist yet (allow_external_ips was just set).
			if full || !p.chains["nat"][xChain] {
				tx.declare("nat", xChain)
			}
			if full || !p.chains["filter"][xrChain] {
				tx.declare("filter", xrChain)
			}
		}
		for _, cidr := range c.Ranges() {
			if !p.family(cidr.Addr().Is6()) {
				continue
			}
			cm := comment("cluster " + c.Name)
			if c.Synced || p.chains["nat"][cChain] {
				top.add("nat", chainServices, fmt.Sprintf("-d %s %s -j %s", cidr, cm, cChain))
			}
			if c.Synced || p.chains["filter"][rChain] {
				top.add("filter", chainFilter, fmt.Sprintf("-d %s %s -j %s", cidr, cm, rChain))
			}
		}
		for _, cidr := range allowed {
			cm := comment("cluster " + c.Name + " external IPs")
			if c.Synced || p.chains["nat"][xChain] {
				top.add("nat", chainServices, fmt.Sprintf("-d %s %s -j %s", cidr, cm, xChain))
			}
			if c.Synced || p.chains["filter"][xrChain] {
				top.add("filter", chainFilter, fmt.Sprintf("-d %s %s -j %s", cidr, cm, xrChain))
			}
		}
		if !c.Synced {
			continue
		}
		// Find what changed first and sort only that: at 10,000 services
		// a partial sync must not pay for sorting them all.
		var changed []model.PortKey
		for key, port := range c.Ports {
			if !p.family(key.IPv6) {
				continue
			}
			if old := p.applied[key]; !full && old != nil && old.port.Equal(port) {
				next[key] = old
				continue
			}
			changed = append(changed, key)
		}
		slices.SortFunc(changed, model.PortKey.Compare)
		for _, key := range changed {
			port := c.Ports[key]
			if key.Protocol == model.SCTP && !p.sctpSupported(ctx) {
				continue
			}
			old := p.applied[key]
			pr := &programmed{port: port}
			if len(port.Endpoints) > 0 {
				pr.dispatch = dispatchRule(port)
				pr.extDispatch = extDispatchRules(port)
				sChain := serviceChain(key)
				tx.declare("nat", sChain)
				for _, r := range serviceRules(port, p.opt.MasqueradeMark) {
					tx.add("nat", sChain, r)
				}
			} else {
				pr.reject = rejectRule(port)
				pr.extReject = extRejectRules(port)
			}
			if serveNP && port.ServedNodePort != 0 {
				if len(port.Endpoints) > 0 {
					pr.nodeDispatch = nodeDispatchRule(port)
				} else {
					pr.nodeReject = nodeRejectRule(port)
				}
			}
			next[key] = pr
			if full {
				if pr.dispatch != "" {
					tx.add("nat", cChain, pr.dispatch)
				}
				if pr.reject != "" {
					tx.add("filter", rChain, pr.reject)
				}
				for _, r := range pr.extDispatch {
					tx.add("nat", xChain, r)
				}
				for _, r := range pr.extReject {
					tx.add("filter", xrChain, r)
				}
				if pr.nodeDispatch != "" {
					tx.add("nat", nChain, pr.nodeDispatch)
				}
				if pr.nodeReject != "" {
					tx.add("filter", nrChain, pr.nodeReject)
				}
				continue
			}
			p.diffRule(tx, "nat", cChain, old.dispatchOrEmpty(), pr.dispatch)
			p.diffRule(tx, "filter", rChain, old.rejectOrEmpty(), pr.reject)
			p.diffRules(tx, "nat", xChain, old.extDispatchOrNil(), pr.extDispatch)
			p.diffRules(tx, "filter", xrChain, old.extRejectOrNil(), pr.extReject)
			p.diffRule(tx, "nat", nChain, old.nodeDispatchOrEmpty(), pr.nodeDispatch)
			p.diffRule(tx, "filter", nrChain, old.nodeRejectOrEmpty(), pr.nodeReject)
		}
	}
	for _, r := range nodeTop {
		if r.table == "nat" {
			top.add("nat", chainServices, r.rule)
			// Node ports answer any client that reaches this host.
			top.add("nat", chainRouted, r.rule)
		} else {
			top.add("filter", chainFilter, r.rule)
		}
	}

	for _, tc := range top.chains {
		if full || p.top[tc.table+"/"+tc.chain] != tc.text() {
			tx.declare(tc.table, tc.chain)
			for _, r := range tc.rules {
				tx.add(tc.table, tc.chain, r)
			}
		}
	}
	if full {
		// Hook our chains into the built-in ones, in the same transaction,
		// unless the hook is there already; the node ports' hook goes when
		// no cluster serves them any more. (A change to that makes the
		// sync full.)
		nodePorts := false
		for _, c := range clusters {
			nodePorts = nodePorts || c.nodePorts
		}
		wanted := map[string]bool{} // "table/chain<TAB>rule"
		for _, j := range jumps {
			spec := fmt.Sprintf("%s -j %s", comment(j.comment), j.target)
			if j.nodePorts && !nodePorts {
				continue
			}
			wanted[j.table+"/"+j.chain+"\t"+spec] = true
			if !slices.Contains(p.hooks[j.table][j.target], j.chain+"\t"+spec) {
				tx.insert(j.table, j.chain, spec)
			}
		}
		// Any other hook into a top chain goes: the node ports' hook
		// when no cluster serves them any more, and what an earlier
		// version hooked, such as nat PREROUTING straight into
		// OUTPOST-SERVICES, which served every routed client.
		for _, tc := range top.chains {
			for _, h := range p.hooks[tc.table][tc.chain] {
				if !wanted[tc.table+"/"+h] {
					chain, rule, _ := strings.Cut(h, "\t")
					tx.del(tc.table, chain, rule)
				}
			}
		}
	}

	// Service chains that are no longer wanted go, in the same transaction.
	if full {
		for _, table := range []string{"nat", "filter"} {
			for _, ch := range slices.Sorted(maps.Keys(p.chains[table])) {
				if tx.declared(table, ch) || keepTags[tagOf(ch)] {
					continue
				}
				for _, h := range p.hooks[table][ch] {
					chain, rule, _ := strings.Cut(h, "\t")
					tx.del(table, chain, rule)
				}
				tx.remove(table, ch)
			}
		}
	} else {
		var gone []model.PortKey
		for key, old := range p.applied {
			if pr := next[key]; pr == nil || (old.dispatch != "" && pr.dispatch == "") {
				gone = append(gone, key)
			}
		}
		slices.SortFunc(gone, model.PortKey.Compare)
		for _, key := range gone {
			old := p.applied[key]
			pr := next[key]
			if pr != nil {
				if old.dispatch != "" && pr.dispatch == "" {
					tx.remove("nat", serviceChain(key))
				}
				continue
			}
			p.diffRule(tx, "nat", clusterChain(key.Cluster), old.dispatch, "")
			p.diffRule(tx, "filter", rejectChain(key.Cluster), old.reject, "")
			p.diffRules(tx, "nat", extChain(key.Cluster), old.extDispatch, nil)
			p.diffRules(tx, "filter", extRejChain(key.Cluster), old.extReject, nil)
			p.diffRule(tx, "nat", nodeChain(key.Cluster), old.nodeDispatch, "")
			p.diffRule(tx, "filter", nodeRejChain(key.Cluster), old.nodeReject, "")
			if old.dispatch != "" {
				tx.remove("nat", serviceChain(key))
			}
		}
	}

	script := tx.script()
	if len(script) > 0 {
		if err := p.opt.Runner.Restore(ctx, script); err != nil {
			return err
		}
	}
	tx.applyTo(p.chains)
	p.top = top.texts()
	hostAddrs := model.NodePortAddrs(st.HostAddrs, p.opt.IPv6)
	p.clearStaleUDP(ctx, p.applied, next, hostAddrs)
	p.hostAddrs = hostAddrs
	p.applied = next
	p.clusters = clusters
	p.needFull = false
	p.log.Debug("iptables sync", "ipv6", p.opt.IPv6, "full", full, "ports", len(next), "bytes", len(script))
	return nil
}

func (p *Proxier) diffRule(tx *transaction, table, chain, old, new string) {
	if old == new {
		return
	}
	if old != "" {
		tx.del(table, chain, old)
	}
	if new != "" {
		tx.add(table, chain, new)
	}
}

// diffRules turns the rules old into new in one chain, whose order does
// not matter: each rule matches its own address.
func (p *Proxier) diffRules(tx *transaction, table, chain string, old, new []string) {
	for _, r := range old {
		if !slices.Contains(new, r) {
			tx.del(table, chain, r)
		}
	}
	for _, r := range new {
		if !slices.Contains(old, r) {
			tx.add(table, chain, r)
		}
	}
}

// topChains are OUTPOST-SERVICES, OUTPOST-PREROUTING, OUTPOST-POSTROUTING,
// OUTPOST-FILTER and OUTPOST-FORWARD as this sync wants them.
type topChains struct {
	chains []*topChain
}

type topChain struct {
	table, chain string
	rules        []string
}

func (c *topChain) text() string { return strings.Join(c.rules, "\n") }

func newTopChains() *topChains {
	return &topChains{chains: []*topChain{
		{table: "nat", chain: chainServices},
		{table: "nat", chain: chainRouted},
		{table: "nat", chain: chainPostrt},
		{table: "filter", chain: chainFilter},
		{table: "filter", chain: chainForward},
	}}
}

func (t *topChains) add(table, chain, rule string) {
	for _, c := range t.chains {
		if c.table == table && c.chain == chain {
			c.rules = append(c.rules, rule)
			return
		}
	}
	panic("unknown top chain " + table + "/" + chain)
}

func (t *topChains) texts() map[string]string {
	out := map[string]string{}
	for _, c := range t.chains {
		out[c.table+"/"+c.chain] = c.text()
	}
	return out
}
