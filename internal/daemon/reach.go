// Reaching a cluster through its nodes: reach = "nodeport" and "routes".
// Such a cluster gets a node watcher next to its cluster watcher; its node
// lists go to the model (nodeport: the endpoints are the nodes) and, for
// routes, to the routes component (routes.go), which reads them at every
// sync.

package daemon

import (
	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
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
	if h.cfg.Reach == reach.Routes {
		rs.routes = d.routes.clusterRoutes(h.cfg.Name)
	}
	return rs
}
