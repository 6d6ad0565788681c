package proxy

import (
	"log/slog"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// NodePortGate says whether a backend serves a cluster's node ports: the
// cluster asks for it (serve_node_ports), and connections are masqueraded,
// without which the pods' replies would not come back through this host
// (config refuses serve_node_ports with masquerade = false; this is the
// backend's own guard). It warns once when the mark is missing.
type NodePortGate struct {
	MasqueradeMark uint32
	Log            *slog.Logger
	warned         bool
}

// Serves says whether c's node ports are served.
func (g *NodePortGate) Serves(c *model.ClusterState) bool {
	if !c.ServeNodePorts {
		return false
	}
	if g.MasqueradeMark == 0 {
		if !g.warned {
			g.warned = true
			g.Log.Warn("serve_node_ports needs masquerading, which is off: node ports are not served", "cluster", c.Name)
		}
		return false
	}
	return true
}
