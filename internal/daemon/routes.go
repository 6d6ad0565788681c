// The routes of reach = "routes": a component that, in every sync, makes
// this host's routes of ours those of the routes clusters' nodes.

package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
	"github.com/kube-outpost/kube-outpost/internal/routes"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// routeSync drives the one route installer of the process from the node
// lists of the cluster set.
type routeSync struct {
	// installer is nil when tests give fake backends and no fake
	// installer: there is nothing to sync then.
	installer *routes.Installer
	clusters  *clusterSet
	store     *model.Store     // its target check, which a route's gateway must pass
	host      hostcheck.Source // this host's default gateways, which no route may cover
	log       *slog.Logger

	// Only the sync loop touches these.
	used    bool // a routes cluster was configured in this run
	cleaned bool // the leftovers of an earlier run were removed

	mu    sync.Mutex
	state map[string]routeState // by routes cluster, from the last route sync
}

var _ component = (*routeSync)(nil)

// routeState is what the last route sync wanted per cluster, for status.
type routeState struct {
	want []routes.Route
	// problems are the pod CIDRs of Ready nodes that are not routed:
	// outside the cluster's pod_cidrs, or without a node address.
	problems []string
}

// hostResolvers reads this host's resolvers; tests replace it.
var hostResolvers = hostcheck.HostResolvers

// Start does nothing: the installer works only when the sync loop asks.
func (r *routeSync) Start(context.Context) error { return nil }

// Stop does nothing: the routes stay, like the rules.
func (r *routeSync) Stop() {}

// Sync makes this host's routes of ours those of every routes cluster's
// nodes: routes.ForNodes of each, in configuration order, so that an
// earlier cluster wins a destination that nobody holds yet. A cluster whose
// node watcher has not listed every node once is routed by the nodes of its
// last known state while it serves one, and otherwise keeps the routes it
// has (keep): the installer removes the routes of ours it is not given, so a
// sync from its incomplete picture would cut the routes the last run
// installed (after a restart, while its apiserver is down, or while a
// reload restarts its watcher). The other clusters are synced meanwhile:
// one cluster down never holds the others.
//
// Without any routes cluster, routes of ours are left by an earlier
// configuration: they are removed once at start, best effort (a host where
// netlink cannot be read and no cluster uses routes must not fail its
// syncs), and on every sync once a routes cluster was configured in this
// run (a reload that drops it withdraws its routes).
func (r *routeSync) Sync(ctx context.Context, _ *model.State) error {
	if r.installer == nil {
		return nil
	}
	var want []routes.Route
	var waiting []string
	var configs []config.Cluster
	state := map[string]routeState{}
	used := false
	for _, h := range r.clusters.inOrder() {
		configs = append(configs, h.cfg)
		if h.cfg.Reach != reach.Routes || h.nodes == nil {
			continue
		}
		used = true
		nodes, synced := h.nodes.Nodes()
		if !synced {
			// After a reboot the kernel holds no route: the last known
			// state's nodes are what the cluster's pods are reached by.
			nodes, synced = r.store.LastKnownNodes(h.cfg.Name)
		}
		if !synced {
			waiting = append(waiting, h.cfg.Name)
			kept, err := r.keep(h.cfg)
			if err != nil {
				return err
			}
			want = append(want, kept.want...)
			state[h.cfg.Name] = kept
			continue
		}
		rs, problems := routes.ForNodes(h.cfg.Name, nodes, h.cfg.NodeAddressTypes, h.cfg.PodCIDRs)
		rs, problems = r.checkGateways(h.cfg.Name, rs, problems)
		want = append(want, rs...)
		state[h.cfg.Name] = routeState{want: rs, problems: problems}
	}
	r.mu.Lock()
	before := r.state
	r.mu.Unlock()
	if len(waiting) > 0 {
		slices.Sort(waiting)
		r.log.Debug("the routes of clusters whose node list is not known yet stay as they are", "clusters", waiting)
	}
	if !used && !r.used {
		if r.cleaned {
			return nil
		}
		r.cleaned = true
		if err := r.installer.Sync(ctx, nil, nil); err != nil {
			r.log.Warn("could not remove the routes an earlier configuration left", "err", err)
		}
		return nil
	}
	r.used = true
	protected, err := r.protectedAddrs(configs)
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
				r.log.Warn("pod CIDR not routed", "cluster", name, "problem", p)
			}
		}
	}
	err = r.installer.Sync(ctx, want, protected)
	r.mu.Lock()
	r.state = state
	r.mu.Unlock()
	return err
}

// keep is what a cluster whose node list is not known holds: the routes
// the last route sync of this process wanted for it, or after a restart
// the routes of ours in the kernel inside its pod_cidrs.
func (r *routeSync) keep(c config.Cluster) (routeState, error) {
	r.mu.Lock()
	st, ok := r.state[c.Name]
	r.mu.Unlock()
	if ok {
		return st, nil
	}
	rs, err := r.installer.Ours(c.PodCIDRs)
	if err != nil {
		return routeState{}, fmt.Errorf("routes: reading the routes cluster %q holds: %w", c.Name, err)
	}
	for i := range rs {
		rs[i].Owner = fmt.Sprintf("cluster %q, kept until its node list is known", c.Name)
	}
	return routeState{want: rs}, nil
}

// protectedAddrs are the addresses no route may cover, whatever a cluster's
// Nodes say: every configured cluster's apiserver (when its kubeconfig names
// it by address: a name is not resolved in the sync loop), this host's
// default gateways and its resolvers. They are read at every route sync, so
// that a changed gateway or resolv.conf counts at once.
func (r *routeSync) protectedAddrs(clusters []config.Cluster) ([]routes.Protected, error) {
	var out []routes.Protected
	for _, c := range clusters {
		if a, ok := hostcheck.APIServerAddr(c.Server); ok {
			out = append(out, routes.Protected{Addr: a, What: fmt.Sprintf("the apiserver of cluster %q", c.Name)})
		}
	}
	rs, err := r.host.Routes()
	if err != nil {
		return nil, fmt.Errorf("routes: reading this host's default gateways: %w", err)
	}
	for _, g := range hostcheck.Gateways(rs) {
		out = append(out, routes.Protected{Addr: g, What: "a default gateway of this host"})
	}
	for _, a := range hostResolvers() {
		out = append(out, routes.Protected{Addr: a, What: "a resolver of this host"})
	}
	return out, nil
}

// checkGateways drops the routes whose gateway the cluster may not make this
// host send to: the one target check of the model, which endpoints and
// reach = "nodeport" nodes pass too. endpoint_cidrs is left out here: with
// reach = "routes" it holds the pods, not the nodes.
func (r *routeSync) checkGateways(cluster string, rs []routes.Route, problems []string) ([]routes.Route, []string) {
	kept := rs[:0]
	for _, rt := range rs {
		if ex, why := r.store.CheckTarget(cluster, rt.Via); ex != "" && ex != model.ExcludedOutsideEndpointCIDRs {
			problems = append(problems, fmt.Sprintf("%s: pod CIDR %v is not routed: its gateway %v is %s", rt.Owner, rt.Dst, rt.Via, why))
			continue
		}
		kept = append(kept, rt)
	}
	return kept, problems
}

// clusterRoutes is what status shows of a routes cluster's routes: nil
// before the cluster's first route sync.
func (r *routeSync) clusterRoutes(cluster string) *status.Routes {
	r.mu.Lock()
	state, ok := r.state[cluster]
	r.mu.Unlock()
	if !ok || r.installer == nil {
		return nil
	}
	refused := r.installer.Refused()
	out := &status.Routes{Wanted: []string{}, Problems: state.problems}
	for _, rt := range state.want {
		out.Wanted = append(out.Wanted, rt.String())
		i := slices.IndexFunc(refused, func(f routes.Refusal) bool { return f.Route == rt })
		if i < 0 {
			out.Installed++
			continue
		}
		// Refusals carry their owner: another cluster's node that
		// wants the same route is not this cluster's refusal. A route
		// may be refused for more than one reason.
		for _, f := range refused[i:] {
			if f.Route == rt {
				out.Refused = append(out.Refused, f.String())
			}
		}
	}
	return out
}
