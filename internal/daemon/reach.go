// Reaching a cluster through its nodes: reach = "nodeport" and "routes".
// Such a cluster gets a node watcher next to its cluster watcher; its node
// lists go to the model (nodeport: the endpoints are the nodes) and, for
// routes, to the one route installer of the process, which the sync loop
// drives.

package daemon

import (
	"context"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/routes"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// throughNodes says whether a cluster needs the node list: the node RBAC
// (packaging/rbac-nodes.yaml) is asked of these clusters only.
func throughNodes(c config.Cluster) bool {
	return c.Reach == config.ReachNodePort || c.Reach == config.ReachRoutes
}

// newNodeWatcher makes the node watcher of a cluster reached through its
// nodes; nil for reach = "direct", which never lists nodes.
func (d *Daemon) newNodeWatcher(c config.Cluster) (*cluster.NodeWatcher, error) {
	if !throughNodes(c) {
		return nil, nil
	}
	name, isRoutes := c.Name, c.Reach == config.ReachRoutes
	return cluster.NodeWatcherFor(c, cluster.NodeWatcherOptions{
		Log: d.log,
		OnChange: func(nodes []model.NodeInfo) {
			// The store queues a sync when the desired state changes;
			// routes depend on nodes alone, so they queue one here.
			d.store.SetNodes(name, nodes)
			if isRoutes {
				d.queue()
			}
		},
	})
}

// routeState is what the last route sync wanted per cluster, for status.
type routeState struct {
	want     []routes.Route
	problems []string // pod CIDRs of Ready nodes that cannot be routed
}

// syncRoutes makes this host's routes of ours those of every routes
// cluster's nodes: the union of routes.ForNodes over them. It runs in the
// sync loop, after the backends. It does nothing while a routes cluster's
// node watcher has not listed every node once: the installer removes the
// routes of ours it is not given, so a sync from an incomplete picture
// would cut the routes the last run installed (after a restart, or while a
// reload restarts a watcher).
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
	d.mu.Lock()
	var want []routes.Route
	var waiting []string
	state := map[string]routeState{}
	used := false
	for name, h := range d.clusters {
		if h.cfg.Reach != config.ReachRoutes || h.nodes == nil {
			continue
		}
		used = true
		nodes, synced := h.nodes.Nodes()
		if !synced {
			waiting = append(waiting, name)
			continue
		}
		rs, problems := routes.ForNodes(nodes, h.cfg.NodeAddressTypes)
		want = append(want, rs...)
		state[name] = routeState{want: rs, problems: problems}
	}
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
		if err := d.routes.Sync(ctx, nil); err != nil {
			d.log.Warn("could not remove the routes an earlier configuration left", "err", err)
		}
		return nil
	}
	d.routesUsed = true
	slices.SortFunc(want, routes.Route.Compare)
	err := d.routes.Sync(ctx, want)
	d.mu.Lock()
	d.routeState = state
	d.mu.Unlock()
	return err
}

// reachStatus is a cluster's reach for status.
type reachStatus struct {
	reach  string
	types  []string
	nodes  *status.NodeWatch
	routes *status.Routes
}

// reachStatus reads a cluster's node watch and routes; d.mu is held.
func (d *Daemon) reachStatus(h *clusterHandle) reachStatus {
	rs := reachStatus{reach: string(h.cfg.Reach)}
	if rs.reach == "" {
		rs.reach = string(config.ReachDirect)
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
	state, ok := d.routeState[h.cfg.Name]
	if h.cfg.Reach != config.ReachRoutes || !ok || d.routes == nil {
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
		// A route refused because two desired routes disagree is listed
		// once per gateway; each is this cluster's only when its own.
		for _, f := range refused[i:] {
			if f.Route == r {
				rs.routes.Refused = append(rs.routes.Refused, f.String())
			}
		}
	}
	return rs
}
