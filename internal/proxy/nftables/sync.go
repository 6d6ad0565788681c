package nftables

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Sync implements proxy.Backend: one transaction per sync, none when
// nothing changed. A full sync writes every chain, map and set of ours
// anew and deletes what it did not write; a partial one writes only the
// ports that changed since the last success.
func (p *Proxier) Sync(ctx context.Context, st *model.State, full bool) (err error) {
	flushed := p.stale.TakeFlushed()
	defer func() {
		if err != nil {
			if flushed {
				p.stale.Flushed()
			}
			// The kernel may hold other than we think, or someone
			// changed it: the next attempt rewrites everything.
			p.needFull = true
		}
	}()
	shapes := map[string]clusterShape{}
	for _, c := range st.Clusters {
		shapes[c.Name] = clusterShape{known: c.PortsKnown(), nodePorts: p.nodePorts.Serves(c)}
	}
	// A cluster that appears, goes, gets its ports known or starts or
	// stops serving node ports has maps this process has not tracked.
	full = full || p.needFull || !maps.Equal(shapes, p.clusters)
	if full {
		objs, err := p.listObjects(ctx)
		if err != nil {
			return err
		}
		p.objects = objs
	}
	s := &syncPass{full: full, split: full && p.opt.Rules != nil && !p.fullByNFT, flushed: flushed, plan: newPlan(), next: make(map[model.PortKey]*rendered, len(p.applied)), kept: map[string]bool{}}
	for _, c := range st.Clusters {
		if !c.PortsKnown() {
			// Keep what an earlier run programmed for this cluster.
			s.kept[clusterTag(c.Name)] = true
			continue
		}
		p.renderCluster(s, c, shapes[c.Name].nodePorts)
	}
	p.writeTop(s, st, shapes)
	if full {
		p.dropUnwritten(s)
	} else {
		p.dropGonePorts(s)
	}
	return p.apply(ctx, st, s, shapes)
}

// syncPass is what one Sync builds before it applies it.
type syncPass struct {
	full bool
	// split: this full sync writes the service chains' rules over
	// netlink (runSplit), so the plan holds none of them as text.
	split bool
	// flushed says our rules were found gone since the last sync
	// (iptables.StaleUDP.Flushed).
	flushed bool
	plan    *plan
	// next is what the ports will be once the plan ran.
	next map[model.PortKey]*rendered
	// newKeys: next holds a port that the last sync did not, or lacks
	// one it did (always so in a full sync): the counters' names change.
	newKeys bool
	// kept are the tags of the clusters whose objects stay as an earlier
	// run left them: those whose ports are not known.
	kept map[string]bool
	top  map[string]string
}

// listObjects reads which objects our table holds; none when the table
// does not exist.
func (p *Proxier) listObjects(ctx context.Context) (map[string]bool, error) {
	if l, ok := p.opt.Rules.(ObjectLister); ok {
		objs, err := l.ListObjects(ctx, p.fam.nft)
		if err == nil {
			return objs, nil
		}
		p.log.Debug("listing our objects over netlink failed; asking nft", "ipv6", p.opt.IPv6, "err", err)
	}
	all, err := p.opt.NFT.ListAll(ctx)
	if knftables.IsNotFound(err) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing table %s %s: %w", p.fam.nft, TableName, err)
	}
	out := map[string]bool{}
	for kind, names := range all {
		switch kind {
		case "chain", "map", "set", "counter":
		default:
			continue // the table itself; nothing of ours is of another kind
		}
		for _, n := range names {
			out[kind+"/"+n] = true
		}
	}
	return out, nil
}

// renderCluster writes a known cluster's maps and sets anew in a full
// sync, and the ports that changed.
func (p *Proxier) renderCluster(s *syncPass, c *model.ClusterState, serveNP bool) {
	f := p.fam
	// A partial sync finds them there: a change to what decides them
	// makes the sync full.
	if s.full {
		key := f.addrType + " . inet_proto . inet_service"
		s.plan.container(&knftables.Map{Name: dispatchMap(c.Name), Type: key + " : verdict", Comment: comment("cluster " + c.Name)})
		s.plan.container(&knftables.Set{Name: rejectSet(c.Name), Type: key, Comment: comment("cluster " + c.Name + " without endpoints")})
		if serveNP {
			s.plan.container(&knftables.Map{Name: nodePortMap(c.Name), Type: "inet_proto . inet_service : verdict",
				Comment: comment("cluster " + c.Name + " node ports")})
			s.plan.container(&knftables.Set{Name: nodeRejectSet(c.Name), Type: "inet_proto . inet_service",
				Comment: comment("cluster " + c.Name + " node ports without endpoints")})
		}
	}
	var changed []model.PortKey
	for key, port := range c.Ports {
		if key.IPv6 != p.opt.IPv6 {
			continue
		}
		if old := p.applied[key]; !s.full && old != nil && old.port.Equal(port) {
			s.next[key] = old
			continue
		}
		changed = append(changed, key)
	}
	// Sorted, so that the same state makes the same transaction.
	slices.SortFunc(changed, model.PortKey.Compare)
	for _, key := range changed {
		r := renderPort(f, c.Ports[key], serveNP, p.opt.MasqueradeMark)
		var old *rendered
		if !s.full {
			old = p.applied[key]
		}
		if old == nil {
			s.newKeys = true
		}
		if old != nil && equalRendered(old, r) {
			// A change only to what programs nothing (left-out
			// endpoints): keep the new port for status, write nothing.
			r.chains = old.chains
		} else {
			p.writePort(s, old, r)
		}
		r.rules = nil
		s.next[key] = r
	}
}

// writePort turns one port's objects from old into cur; nil is none.
func (p *Proxier) writePort(s *syncPass, old, cur *rendered) {
	pl := s.plan
	if cur != nil {
		k := cur.port.Key
		pl.counter(counterName(k), k.String())
		for _, name := range slices.Sorted(maps.Keys(cur.affinity)) {
			pl.affinitySet(p.fam, name, cur.affinity[name])
		}
		// The endpoint chains, then the service chain: the plan creates
		// every chain before it writes any rule, so the order only
		// keeps the transaction the same for the same state.
		changed := func(name string) bool {
			d, had := old.chainDigest(name)
			return !had || d != cur.chains[name]
		}
		for _, name := range slices.Sorted(maps.Keys(cur.chains)) {
			if name == serviceChain(k) || !changed(name) {
				continue
			}
			pl.chain(&knftables.Chain{Name: name}, rules(cur.rules[name]), p.objects["chain/"+name])
		}
		if rs, ok := cur.rules[serviceChain(k)]; ok && changed(serviceChain(k)) {
			exists := p.objects["chain/"+serviceChain(k)]
			ch := &knftables.Chain{Name: serviceChain(k), Comment: comment(k.String())}
			if s.split && len(cur.affinity) == 0 {
				// 110,000 rules at 10,000 services, never sent as
				// text: a fifth of the sync's peak memory.
				pl.chain(ch, nil, false)
			} else {
				pl.chain(ch, rules(rs), exists)
			}
			if len(cur.affinity) == 0 {
				pl.rewrites = append(pl.rewrites, cur.port)
				pl.rewritesNew = pl.rewritesNew || !exists || !p.objects["counter/"+counterName(k)]
			}
		}
	}
	var oldElems, curElems []elem
	if old != nil {
		oldElems = old.elems
	}
	if cur != nil {
		curElems = cur.elems
	}
	want := map[string]elem{}
	for _, e := range curElems {
		want[e.id()] = e
	}
	had := map[string]elem{}
	for _, e := range oldElems {
		had[e.id()] = e
		if w, ok := want[e.id()]; !ok || w.value != e.value || w.text != e.text {
			pl.delElems = append(pl.delElems, &knftables.Element{Map: mapName(e), Set: setName(e), Key: e.key})
		}
	}
	for _, e := range curElems {
		if h, ok := had[e.id()]; !ok || h.value != e.value || h.text != e.text {
			pl.addElems = append(pl.addElems, e.object())
		}
	}
	if old == nil {
		return
	}
	for name := range old.chains {
		if _, keep := cur.chainDigest(name); !keep {
			pl.drop("chain", name)
		}
	}
	for name := range old.affinity {
		if cur == nil || cur.affinity[name] == 0 {
			pl.drop("set", name)
		}
	}
	if cur == nil {
		pl.drop("counter", counterName(old.port.Key))
	}
}

// chainDigest is the digest of the port's chain name, if it has it; nil
// has none.
func (r *rendered) chainDigest(name string) (uint64, bool) {
	if r == nil {
		return 0, false
	}
	d, ok := r.chains[name]
	return d, ok
}

func mapName(e elem) string {
	if e.isMap {
		return e.set
	}
	return ""
}

func setName(e elem) string {
	if e.isMap {
		return ""
	}
	return e.set
}

func rules(texts []string) []*knftables.Rule {
	out := make([]*knftables.Rule, len(texts))
	for i, t := range texts {
		out[i] = &knftables.Rule{Rule: t}
	}
	return out
}

// dropGonePorts deletes, in a partial sync, the objects of the ports that
// went.
func (p *Proxier) dropGonePorts(s *syncPass) {
	// Every port of every sync passes here: the cluster's tag is looked
	// at only where a cluster keeps its objects, the rare case.
	kept := func(key model.PortKey) bool { return len(s.kept) > 0 && s.kept[clusterTag(key.Cluster)] }
	var gone []model.PortKey
	for key := range p.applied {
		if s.next[key] == nil && !kept(key) {
			gone = append(gone, key)
		}
	}
	slices.SortFunc(gone, model.PortKey.Compare)
	for _, key := range gone {
		p.writePort(s, p.applied[key], nil)
	}
	s.newKeys = s.newKeys || len(gone) > 0
	if len(s.kept) == 0 {
		return
	}
	// The ports of clusters that keep their objects stay as they were.
	for key, r := range p.applied {
		if kept(key) {
			s.next[key] = r
		}
	}
}

// dropUnwritten deletes, in a full sync, every object of ours that this
// sync did not write and no unsynced cluster keeps.
func (p *Proxier) dropUnwritten(s *syncPass) {
	for _, id := range slices.Sorted(maps.Keys(p.objects)) {
		if s.plan.made[id] {
			continue
		}
		kind, name, _ := strings.Cut(id, "/")
		if t := tagOf(name); t != "" && s.kept[t] {
			continue
		}
		s.plan.drop(kind, name)
	}
}

// apply runs the plan and, once it succeeded, records what the kernel
// now holds.
func (p *Proxier) apply(ctx context.Context, st *model.State, s *syncPass, shapes map[string]clusterShape) error {
	if err := p.run(ctx, s); err != nil {
		return err
	}
	for id := range s.plan.gone {
		delete(p.objects, id)
	}
	for id := range s.plan.made {
		p.objects[id] = true
	}
	p.top = s.top
	p.synced.Store(true)
	p.stale.Forget(ctx, p.applied, s.next, func(cluster string) bool { return s.kept[clusterTag(cluster)] },
		model.NodePortAddrs(st.HostAddrs, p.opt.IPv6), s.flushed)
	p.publishCounters(s.next, s.full || s.newKeys)
	p.applied = s.next
	p.clusters = shapes
	p.needFull = false
	p.log.Debug("nftables sync", "ipv6", p.opt.IPv6, "full", s.full, "ports", len(s.next))
	return nil
}

// run sends the plan to the kernel: one nft transaction, or with the
// fast path (fastpath.go) the service chains' rules over netlink.
func (p *Proxier) run(ctx context.Context, s *syncPass) error {
	if p.opt.Rules != nil && !s.full {
		if chains, ok := s.plan.fastChains(p.fam, p.opt.MasqueradeMark); ok {
			err := p.opt.Rules.ReplaceRules(ctx, p.fam.nft, chains)
			if err == nil {
				p.fastBatches.Add(1)
				return nil
			}
			// Whole or nothing: the table is as it was, and nft
			// writes the same, creating what someone deleted.
			p.log.Debug("netlink batch failed; writing it with nft", "ipv6", p.opt.IPv6, "chains", len(chains), "err", err)
		}
	}
	if s.split {
		return p.runSplit(ctx, s.plan)
	}
	return p.runNFT(ctx, s.plan)
}

func (p *Proxier) runNFT(ctx context.Context, pl *plan) error {
	tx := pl.transaction(p.opt.NFT)
	if tx == nil {
		return nil
	}
	if err := p.opt.NFT.Run(ctx, tx); err != nil {
		return &TransactionError{Family: p.fam.nft, Err: err}
	}
	return nil
}

// TransactionError is an nft transaction the kernel (or nft) refused as a
// whole: the table stayed as it was.
type TransactionError struct {
	Family knftables.Family
	Err    error
}

func (e *TransactionError) Error() string {
	return fmt.Sprintf("nft transaction on table %s %s: %v", e.Family, TableName, e.Err)
}

func (e *TransactionError) Unwrap() error { return e.Err }

// TransactionFailed implements proxy.TransactionFailure.
func (*TransactionError) TransactionFailed() {}
