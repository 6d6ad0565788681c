// Reaching a cluster through its nodes: reach = "nodeport" and "routes".
// Such a cluster gets a node watcher next to its cluster watcher; its node
// lists go to the model (nodeport: the endpoints are the nodes) and, for
// routes, to the one route installer of the process, which the sync loop
// drives.

package daemon

import (
	"context"
	"fmt"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
	"github.com/kube-outpost/kube-outpost/internal/routes"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// newNodeWatcher makes the node watcher of a cluster reached through its
// nodes; nil for reach = "direct", which never lists nodes.
func (s *clusterSet) newNodeWatcher(c config.Cluster) (*cluster.NodeWatcher, error) {
	if !c.Reach.ThroughNodes() {
		return nil, nil
	}
	name, isRoutes := c.Name, c.Reach == reach.Routes
	return cluster.NodeWatcherFor(c, cluster.NodeWatcherOptions{
		Log: s.log,
		OnChange: func(nodes []model.NodeInfo) {
			// The store queues a sync when the desired state changes;
			// routes depend on nodes alone, so they queue one here.
			s.store.SetNodes(name, nodes)
			if isRoutes {
				s.queue()
			}
		},
	})
}

// routeState is what the last route sync wanted per cluster, for status.
type routeState struct {
	want []routes.Route
	// problems are the pod CIDRs of Ready nodes that are not routed:
	// outside the cluster's pod_cidrs, or without a node address.
	problems []string
}

// hostResolvers reads this host's resolvers; tests replace it.
var hostResolvers = hostcheck.HostResolvers

// syncRoutes makes this host's routes of ours those of every routes
// cluster's nodes: routes.ForNodes of each, in configuration order, so that
// an earlier cluster wins a destination that nobody holds yet. It runs in
// the sync loop, after the backends. It does nothing while a routes
// cluster's node watcher has not listed every node once: the installer
// removes the routes of ours it is not given, so a sync from an incomplete
// picture would cut the routes the last run installed (after a restart, or
// while a reload restarts a watcher).
//
// Without any routes cluster, routes of ours are left by an earlier
// configuration: they are removed once at start, best effort (a host where
// netlink cannot be read and no cluster uses routes must not fail its
// syncs), and on every sync once a routes cluster was configured in this
// run (a reload that drops it withdraws its routes).
func (d *Daemon) syncRoutes(ctx context.Context) error {
	if d.routes == nil {
		return nil
	}
	handles := d.clusters.inOrder()
	var want []routes.Route
	var waiting []string
	var configs []config.Cluster
	state := map[string]routeState{}
	used := false
	for _, h := range handles {
		configs = append(configs, h.cfg)
		if h.cfg.Reach != reach.Routes || h.nodes == nil {
			continue
		}
		used = true
		nodes, synced := h.nodes.Nodes()
		if !synced {
			waiting = append(waiting, h.cfg.Name)
			continue
		}
		rs, problems := routes.ForNodes(h.cfg.Name, nodes, h.cfg.NodeAddressTypes, h.cfg.PodCIDRs)
		rs, problems = d.checkGateways(h.cfg.Name, rs, problems)
		want = append(want, rs...)
		state[h.cfg.Name] = routeState{want: rs, problems: problems}
	}
	d.mu.Lock()
	before := d.routeState
	d.mu.Unlock()
	if len(waiting) > 0 {
		slices.Sort(waiting)
		d.log.Debug("routes not synced: waiting for the node lists", "clusters", waiting)
		return nil
	}
	if !used && !d.routesUsed {
		if d.routesCleaned {
			return nil
		}
		d.routesCleaned = true
		if err := d.routes.Sync(ctx, nil, nil); err != nil {
			d.log.Warn("could not remove the routes an earlier configuration left", "err", err)
		}
		return nil
	}
	d.routesUsed = true
	protected, err := d.protectedAddrs(configs)
	if err != nil {
		// Without them no route is known safe: the routes in place
		// stay, and the next sync tries again.
		return err
	}
	// Said once per change, like the installer's refusals: a node that
	// keeps claiming a range not its cluster's must not flood the log.
	for name, st := range state {
		for _, p := range st.problems {
			if !slices.Contains(before[name].problems, p) {
				d.log.Warn("pod CIDR not routed", "cluster", name, "problem", p)
			}
		}
	}
	err = d.routes.Sync(ctx, want, protected)
	d.mu.Lock()
	d.routeState = state
	d.mu.Unlock()
	return err
}

// protectedAddrs are the addresses no route may cover, whatever a cluster's
// Nodes say: every configured cluster's apiserver (when its kubeconfig names
// it by address: a name is not resolved in the sync loop), this host's
// default gateways and its resolvers. They are read at every route sync, so
// that a changed gateway or resolv.conf counts at once.
func (d *Daemon) protectedAddrs(clusters []config.Cluster) ([]routes.Protected, error) {
	var out []routes.Protected
	for _, c := range clusters {
		if a, ok := hostcheck.APIServerAddr(c.Server); ok {
			out = append(out, routes.Protected{Addr: a, What: fmt.Sprintf("the apiserver of cluster %q", c.Name)})
		}
	}
	rs, err := d.host.Routes()
	if err != nil {
		return nil, fmt.Errorf("routes: reading this host's default gateways: %w", err)
	}
	for _, g := range hostcheck.Gateways(rs) {
		out = append(out, routes.Protected{Addr: g, What: "a default gateway of this host"})
	}
	for _, r := range hostResolvers() {
		out = append(out, routes.Protected{Addr: r, What: "a resolver of this host"})
	}
	return out, nil
}

// reachStatus is a cluster's reach for status.
type reachStatus struct {
	reach  string
	types  []string
	nodes  *status.NodeWatch
	routes *status.Routes
}

// reachStatus reads a cluster's node watch and routes.
func (d *Daemon) reachStatus(h *clusterHandle) reachStatus {
	rs := reachStatus{reach: string(h.cfg.Reach)}
	if rs.reach == "" {
		rs.reach = string(reach.Direct)
	}
	if h.nodes == nil {
		return rs
	}
	rs.types = h.cfg.NodeAddressTypes
	st := h.nodes.Status()
	nodes, _ := h.nodes.Nodes()
	rs.nodes = &status.NodeWatch{Synced: st.Synced, Nodes: st.Nodes, WatchErrors: st.WatchErrors,
		LastError: st.LastError, LastErrorAt: st.LastErrorAt}
	for _, n := range nodes {
		if n.Ready {
			rs.nodes.Ready++
		}
	}
	d.mu.Lock()
	state, ok := d.routeState[h.cfg.Name]
	d.mu.Unlock()
	if h.cfg.Reach != reach.Routes || !ok || d.routes == nil {
		return rs
	}
	refused := d.routes.Refused()
	rs.routes = &status.Routes{Wanted: []string{}, Problems: state.problems}
	for _, r := range state.want {
		rs.routes.Wanted = append(rs.routes.Wanted, r.String())
		i := slices.IndexFunc(refused, func(f routes.Refusal) bool { return f.Route == r })
		if i < 0 {
			rs.routes.Installed++
			continue
		}
		// Refusals carry their owner: another cluster's node that
		// wants the same route is not this cluster's refusal. A route
		// may be refused for more than one reason.
		for _, f := range refused[i:] {
			if f.Route == r {
				rs.routes.Refused = append(rs.routes.Refused, f.String())
			}
		}
	}
	return rs
}

// checkGateways drops the routes whose gateway the cluster may not make this
// host send to: the one target check of the model, which endpoints and
// reach = "nodeport" nodes pass too. endpoint_cidrs is left out here: with
// reach = "routes" it holds the pods, not the nodes.
func (d *Daemon) checkGateways(cluster string, rs []routes.Route, problems []string) ([]routes.Route, []string) {
	kept := rs[:0]
	for _, r := range rs {
		if ex, why := d.store.CheckTarget(cluster, r.Via); ex != "" && ex != model.ExcludedOutsideEndpointCIDRs {
			problems = append(problems, fmt.Sprintf("%s: pod CIDR %v is not routed: its gateway %v is %s", r.Owner, r.Dst, r.Via, why))
			continue
		}
		kept = append(kept, r)
	}
	return kept, problems
}
