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

// Sync implements proxy.Backend. It builds one iptables-restore
// transaction in phases and applies it: a full sync rewrites every chain
// of ours, a partial one writes only what changed since the last success.
func (p *Proxier) Sync(ctx context.Context, st *model.State, full bool) (err error) {
	flushed := p.stale.TakeFlushed()
	defer func() {
		if err != nil {
			if flushed {
				p.stale.Flushed()
			}
			// The kernel may hold part of what we think it holds, or
			// someone changed it: the next attempt rewrites everything.
			p.needFull = true
		}
	}()
	shapes := p.clusterShapes(st)
	if full, err = p.decideFull(ctx, shapes, full); err != nil {
		return err
	}
	s := newSyncPass(full)
	s.flushed = flushed
	p.renderMasquerade(s)
	p.renderRoutedClients(s)
	for _, c := range st.Clusters {
		serveNP := p.servesNodePorts(c)
		p.renderClusterChains(s, c, serveNP)
		if c.PortsKnown() {
			p.renderPorts(ctx, s, c, serveNP)
		}
	}
	s.renderNodePortTop()
	renderCanaries(s)
	p.writeTopChains(s)
	if full {
		p.writeHooks(s, shapes)
		p.removeUnwantedChains(s)
	} else {
		p.removeGonePorts(s)
	}
	return p.apply(ctx, st, s, shapes)
}

// syncPass is what one Sync builds before it applies it.
type syncPass struct {
	full bool
	// flushed says our rules were found gone since the last sync
	// (StaleUDP.Flushed).
	flushed bool
	tx      *transaction
	// next is what the port rules will be once tx is applied.
	next map[model.PortKey]*programmed
	// keepTags are the tags of the clusters whose chains stay as an
	// earlier run programmed them: those whose ports are not known yet
	// (not synced, and no last known state).
	keepTags map[string]bool
	// top are the top chains as this sync wants them.
	top *topChains
	// nodeTop are the top chains' rules into the node port chains, kept
	// aside to come after every range.
	nodeTop []tableRule
	// hooks are the jumps into our chains a full sync wants.
	hooks []hookRef
}

type tableRule struct{ table, rule string }

func newSyncPass(full bool) *syncPass {
	return &syncPass{
		full:     full,
		tx:       newTransaction(),
		next:     map[model.PortKey]*programmed{},
		keepTags: map[string]bool{},
		top:      newTopChains(),
	}
}

// clusterShapes is what decides, per cluster, which of its chains exist.
func (p *Proxier) clusterShapes(st *model.State) map[string]clusterShape {
	shapes := map[string]clusterShape{}
	for _, c := range st.Clusters {
		shapes[c.Name] = clusterShape{known: c.PortsKnown(), nodePorts: p.servesNodePorts(c)}
	}
	return shapes
}

// decideFull says whether this sync rewrites everything, and when it does
// reads which of our chains and hooks the kernel holds.
func (p *Proxier) decideFull(ctx context.Context, shapes map[string]clusterShape, full bool) (bool, error) {
	// A cluster that appears, goes, gets its ports known or starts or stops
	// serving node ports has chains whose content this process has not
	// tracked: rewrite all.
	if !maps.Equal(shapes, p.clusters) {
		full = true
	}
	full = full || p.needFull
	if full {
		chains, hooks, err := p.listChains(ctx)
		if err != nil {
			return full, err
		}
		p.chains, p.hooks = chains, hooks
	}
	return full, nil
}

// renderMasquerade puts the masquerade rules in OUTPOST-POSTROUTING. The
// top chains hold a few rules per cluster: they are rendered every time,
// and written when they changed.
func (p *Proxier) renderMasquerade(s *syncPass) {
	m := p.opt.MasqueradeMark
	if m == 0 {
		return
	}
	s.top.add("nat", chainPostrt, fmt.Sprintf("-m mark ! --mark %#x/%#x -j RETURN", m, m))
	// Clear the bit, so that a packet passing this host twice is not
	// masqueraded again on the second pass.
	s.top.add("nat", chainPostrt, fmt.Sprintf("-j MARK --xor-mark %#x", m))
	masq := comment("kube-outpost: masquerade proxied traffic") + " -j MASQUERADE"
	if p.opt.Runner.HasRandomFully() {
		masq += " --random-fully"
	}
	s.top.add("nat", chainPostrt, masq)
}

// renderRoutedClients lets routed packets reach the services only from
// routed_clients. goto, not jump: what OUTPOST-SERVICES does not take has
// passed its node port rules already, and leaves for the built-in chain.
func (p *Proxier) renderRoutedClients(s *syncPass) {
	for _, cidr := range p.opt.RoutedClients {
		if !p.family(cidr.Addr().Is6()) {
			continue
		}
		cm := comment("routed_clients")
		s.top.add("nat", chainRouted, fmt.Sprintf("-s %s %s -g %s", cidr, cm, chainServices))
		s.top.add("filter", chainForward, fmt.Sprintf("-s %s %s -j %s", cidr, cm, chainFilter))
	}
}

// renderClusterChains declares c's chains where this sync writes them
// anew, and renders the top chains' rules into them: by its ranges, its
// allowed external IPs and, aside, its node ports.
func (p *Proxier) renderClusterChains(s *syncPass, c *model.ClusterState, serveNP bool) {
	tx, full := s.tx, s.full
	cChain, rChain := clusterChain(c.Name), rejectChain(c.Name)
	xChain, xrChain := extChain(c.Name), extRejChain(c.Name)
	nChain, nrChain := nodeChain(c.Name), nodeRejChain(c.Name)
	if serveNP {
		cm := comment("cluster " + c.Name + " node ports")
		local := notLoopback(p.opt.IPv6) + " -m addrtype --dst-type LOCAL"
		if c.PortsKnown() || p.chains["nat"][nChain] {
			s.nodeTop = append(s.nodeTop, tableRule{"nat", fmt.Sprintf("%s %s -j %s", local, cm, nChain)})
		}
		if c.PortsKnown() || p.chains["filter"][nrChain] {
			s.nodeTop = append(s.nodeTop, tableRule{"filter",
				fmt.Sprintf("%s -m conntrack --ctstate NEW %s -j %s", local, cm, nrChain)})
		}
		if c.PortsKnown() && full {
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
	if !c.PortsKnown() {
		// Keep what an earlier run programmed for this cluster.
		s.keepTags[clusterTag(c.Name)] = true
	} else if full {
		tx.declare("nat", cChain)
		tx.declare("filter", rChain)
	}
	if c.PortsKnown() && len(allowed) > 0 {
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
		if c.PortsKnown() || p.chains["nat"][cChain] {
			s.top.add("nat", chainServices, fmt.Sprintf("-d %s %s -j %s", cidr, cm, cChain))
		}
		if c.PortsKnown() || p.chains["filter"][rChain] {
			s.top.add("filter", chainFilter, fmt.Sprintf("-d %s %s -j %s", cidr, cm, rChain))
		}
	}
	for _, cidr := range allowed {
		cm := comment("cluster " + c.Name + " external IPs")
		if c.PortsKnown() || p.chains["nat"][xChain] {
			s.top.add("nat", chainServices, fmt.Sprintf("-d %s %s -j %s", cidr, cm, xChain))
		}
		if c.PortsKnown() || p.chains["filter"][xrChain] {
			s.top.add("filter", chainFilter, fmt.Sprintf("-d %s %s -j %s", cidr, cm, xrChain))
		}
	}
}

// renderPorts writes the rules of a cluster's known service ports: all
// of them in a full sync, else those that changed.
func (p *Proxier) renderPorts(ctx context.Context, s *syncPass, c *model.ClusterState, serveNP bool) {
	for _, key := range p.changedPorts(s, c) {
		port := c.Ports[key]
		if key.Protocol == model.SCTP && !p.sctpSupported(ctx) {
			continue
		}
		pr := portRules(port, serveNP)
		if len(port.Endpoints) > 0 {
			sChain := serviceChain(key)
			s.tx.declare("nat", sChain)
			for _, r := range serviceRules(port, p.opt.MasqueradeMark) {
				s.tx.add("nat", sChain, r)
			}
		}
		s.next[key] = pr
		var old *programmed
		if !s.full {
			old = p.applied[key]
		}
		writePortRules(s.tx, c.Name, old, pr)
	}
}

// changedPorts returns, sorted, c's ports of this family that this sync
// writes, and carries the others over into s.next as they are. It finds
// what changed first and sorts only that: at 10,000 services a partial
// sync must not pay for sorting them all.
func (p *Proxier) changedPorts(s *syncPass, c *model.ClusterState) []model.PortKey {
	var changed []model.PortKey
	for key, port := range c.Ports {
		if !p.family(key.IPv6) {
			continue
		}
		if old := p.applied[key]; !s.full && old != nil && old.port.Equal(port) {
			s.next[key] = old
			continue
		}
		changed = append(changed, key)
	}
	slices.SortFunc(changed, model.PortKey.Compare)
	return changed
}

// portRules renders the rules of one service port in its cluster's chains.
func portRules(port *model.ServicePort, serveNP bool) *programmed {
	pr := &programmed{port: port}
	if len(port.Endpoints) > 0 {
		pr.dispatch = dispatchRule(port)
		pr.extDispatch = extDispatchRules(port)
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
	return pr
}

// writePortRules turns one port's rules in its cluster's chains from old
// into new; nil is no rules (a chain written anew, a port that went).
func writePortRules(tx *transaction, cluster string, old, new *programmed) {
	diffRule(tx, "nat", clusterChain(cluster), old.dispatchOrEmpty(), new.dispatchOrEmpty())
	diffRule(tx, "filter", rejectChain(cluster), old.rejectOrEmpty(), new.rejectOrEmpty())
	diffRules(tx, "nat", extChain(cluster), old.extDispatchOrNil(), new.extDispatchOrNil())
	diffRules(tx, "filter", extRejChain(cluster), old.extRejectOrNil(), new.extRejectOrNil())
	diffRule(tx, "nat", nodeChain(cluster), old.nodeDispatchOrEmpty(), new.nodeDispatchOrEmpty())
	diffRule(tx, "filter", nodeRejChain(cluster), old.nodeRejectOrEmpty(), new.nodeRejectOrEmpty())
}

// renderNodePortTop adds the rules into the node port chains to the top
// chains, after every range: a packet to a service address never reaches
// them.
func (s *syncPass) renderNodePortTop() {
	for _, r := range s.nodeTop {
		if r.table == "nat" {
			s.top.add("nat", chainServices, r.rule)
			// Node ports answer any client that reaches this host.
			s.top.add("nat", chainRouted, r.rule)
		} else {
			s.top.add("filter", chainFilter, r.rule)
		}
	}
}

// writeTopChains writes the top chains that changed, or all of them in a
// full sync.
func (p *Proxier) writeTopChains(s *syncPass) {
	for _, tc := range s.top.chains {
		if s.full || p.top[tc.table+"/"+tc.chain] != tc.text() {
			s.tx.declare(tc.table, tc.chain)
			for _, r := range tc.rules {
				s.tx.add(tc.table, tc.chain, r)
			}
		}
	}
}

// writeHooks hooks our chains into the built-in ones, in the same
// transaction, unless the hook is there already; the node ports' hook
// goes when no cluster serves them any more. (A change to that makes the
// sync full: this runs in full syncs only.)
func (p *Proxier) writeHooks(s *syncPass, shapes map[string]clusterShape) {
	nodePorts := false
	for _, c := range shapes {
		nodePorts = nodePorts || c.nodePorts
	}
	wanted := map[string]bool{} // "table/chain<TAB>rule"
	for _, j := range jumps {
		spec := fmt.Sprintf("%s -j %s", comment(j.comment), j.target)
		if j.nodePorts && !nodePorts {
			continue
		}
		wanted[j.table+"/"+j.chain+"\t"+spec] = true
		s.hooks = append(s.hooks, hookRef{table: j.table, chain: j.chain, target: j.target})
		if !slices.Contains(p.hooks[j.table][j.target], j.chain+"\t"+spec) {
			s.tx.insert(j.table, j.chain, spec)
		}
	}
	// Any other hook into a top chain goes: the node ports' hook
	// when no cluster serves them any more, and what an earlier
	// version hooked, such as nat PREROUTING straight into
	// OUTPOST-SERVICES, which served every routed client.
	for _, tc := range s.top.chains {
		for _, h := range p.hooks[tc.table][tc.chain] {
			if !wanted[tc.table+"/"+h] {
				chain, rule, _ := strings.Cut(h, "\t")
				s.tx.del(tc.table, chain, rule)
			}
		}
	}
}

// removeUnwantedChains removes, in a full sync, every chain of ours that
// this sync did not declare and no unsynced cluster keeps, with the hooks
// into it.
func (p *Proxier) removeUnwantedChains(s *syncPass) {
	for _, table := range []string{"nat", "filter"} {
		for _, ch := range slices.Sorted(maps.Keys(p.chains[table])) {
			if s.tx.declared(table, ch) || s.keepTags[tagOf(ch)] {
				continue
			}
			for _, h := range p.hooks[table][ch] {
				chain, rule, _ := strings.Cut(h, "\t")
				s.tx.del(table, chain, rule)
			}
			s.tx.remove(table, ch)
		}
	}
}

// removeGonePorts removes, in a partial sync, the rules of the ports that
// went, and the service chains of ports that lost their endpoints.
func (p *Proxier) removeGonePorts(s *syncPass) {
	var gone []model.PortKey
	for key, old := range p.applied {
		if pr := s.next[key]; pr == nil || (old.dispatch != "" && pr.dispatch == "") {
			gone = append(gone, key)
		}
	}
	slices.SortFunc(gone, model.PortKey.Compare)
	for _, key := range gone {
		old := p.applied[key]
		if pr := s.next[key]; pr != nil {
			if old.dispatch != "" && pr.dispatch == "" {
				s.tx.remove("nat", serviceChain(key))
			}
			continue
		}
		writePortRules(s.tx, key.Cluster, old, nil)
		if old.dispatch != "" {
			s.tx.remove("nat", serviceChain(key))
		}
	}
}

// apply runs the transaction and, once it succeeded, records what the
// kernel now holds: chains, top chains, port rules, cluster shapes.
func (p *Proxier) apply(ctx context.Context, st *model.State, s *syncPass, shapes map[string]clusterShape) error {
	script := s.tx.script()
	if len(script) > 0 {
		if err := p.opt.Runner.Restore(ctx, script); err != nil {
			return err
		}
	}
	s.tx.applyTo(p.chains)
	p.top = s.top.texts()
	p.canaries.Store(true)
	if s.full {
		p.hooked.Store(&s.hooks)
	}
	p.stale.Forget(ctx, p.applied, s.next, func(cluster string) bool { return s.keepTags[clusterTag(cluster)] },
		model.NodePortAddrs(st.HostAddrs, p.opt.IPv6), s.flushed)
	p.applied = s.next
	p.clusters = shapes
	p.needFull = false
	p.log.Debug("iptables sync", "ipv6", p.opt.IPv6, "full", s.full, "ports", len(s.next), "bytes", len(script))
	return nil
}

// diffRule turns the rule old into new in one chain; "" is none.
func diffRule(tx *transaction, table, chain, old, new string) {
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
func diffRules(tx *transaction, table, chain string, old, new []string) {
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
		{table: "nat", chain: chainCanary},
		{table: "filter", chain: chainCanary},
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
