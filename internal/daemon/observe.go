package daemon

import (
	"slices"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
)

// What the sync loop and the metrics' scrapes learn from the daemon: when a
// sync was asked for, and the clusters' watch state. The HTTP servers that
// expose them are in servers.go.

// queue asks for a sync because something changed: the desired state or
// the kernel's state behind a backend's back. The health check counts the
// wait from here. The full sync's turn comes from the runner
// (syncloop.go).
func (d *Daemon) queue() {
	d.health.QueuedUpdate()
	d.metrics.Queued(time.Now())
	d.loop.trigger()
}

// clusterStatuses reports the watch state of the configured clusters, for
// each scrape.
func (d *Daemon) clusterStatuses() []metrics.ClusterStatus {
	var out []metrics.ClusterStatus
	d.clusters.each(func(h *clusterHandle) {
		st := h.watcher.Status()
		cs := metrics.ClusterStatus{
			Name: h.cfg.Name, Up: st.Connected && st.Synced, Synced: st.Synced, WatchErrors: st.WatchErrors,
			WatchRestarts: map[string]int{},
		}
		var nodes cluster.NodeStatus
		if h.nodes != nil {
			nodes = h.nodes.Status()
		}
		for _, reason := range cluster.RestartReasons {
			cs.WatchRestarts[reason] = st.Restarts[reason] + nodes.Restarts[reason]
		}
		if rs := d.reachStatus(h).routes; rs != nil {
			n := len(rs.Refused) + len(rs.Problems)
			cs.RoutesRefused = &n
		}
		cs.LastKnownStateFrom = d.store.LastKnownFrom(h.cfg.Name)
		if d.writer != nil {
			saved := d.writer.Saved(h.cfg.Name)
			cs.StateKept, cs.StateSavedAt, cs.StateSaveErrors = true, saved.At, saved.Errors
		}
		out = append(out, cs)
	})
	slices.SortFunc(out, func(a, b metrics.ClusterStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
