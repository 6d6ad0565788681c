package metrics

import (
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestStaleState: a cluster serving its last known state says so, with the
// state's time, and counts what it programs; the saves of this run are
// timed and their failures counted, when states are kept at all.
func TestStaleState(t *testing.T) {
	m, f := newTest()
	from := time.Unix(1795836000, 0)
	f.clusters = []ClusterStatus{
		{Name: "alpha", Up: true, Synced: true, StateKept: true, StateSavedAt: time.Unix(1795839600, 0)},
		{Name: "beta", LastKnownStateFrom: from, StateKept: true, StateSaveErrors: 2},
		{Name: "gamma"},
	}
	compare(t, m, `
# HELP kube_outpost_cluster_stale_state 1 while the cluster has not synced and its rules are programmed from its last known state, saved by an earlier run; 0 otherwise.
# TYPE kube_outpost_cluster_stale_state gauge
kube_outpost_cluster_stale_state{cluster="alpha"} 0
kube_outpost_cluster_stale_state{cluster="beta"} 1
kube_outpost_cluster_stale_state{cluster="gamma"} 0
# HELP kube_outpost_cluster_stale_state_timestamp_seconds When the last known state the cluster's rules come from was saved, in seconds since the epoch; only while cluster_stale_state is 1.
# TYPE kube_outpost_cluster_stale_state_timestamp_seconds gauge
kube_outpost_cluster_stale_state_timestamp_seconds{cluster="beta"} 1.795836e+09
# HELP kube_outpost_state_saved_timestamp_seconds When this run last saved the cluster's state to state_dir, in seconds since the epoch; absent before the first time.
# TYPE kube_outpost_state_saved_timestamp_seconds gauge
kube_outpost_state_saved_timestamp_seconds{cluster="alpha"} 1.7958396e+09
# HELP kube_outpost_state_save_errors_total Saves of the cluster's state to state_dir that failed (too big, or the disk refused); each change of error is also a warning in the log.
# TYPE kube_outpost_state_save_errors_total counter
kube_outpost_state_save_errors_total{cluster="alpha"} 0
kube_outpost_state_save_errors_total{cluster="beta"} 2
`, "kube_outpost_cluster_stale_state", "kube_outpost_cluster_stale_state_timestamp_seconds",
		"kube_outpost_state_saved_timestamp_seconds", "kube_outpost_state_save_errors_total")

	// What the kept state programs is counted, as a synced cluster's.
	beta := cluster("beta", false, port("beta", "web", "http", 2))
	beta.LastKnown = from
	m.ObserveSync(Sync{End: time.Now(), State: &model.State{Clusters: []*model.ClusterState{beta}}})
	compare(t, m, `
# HELP kube_outpost_endpoints_programmed Endpoints the rules balance over, one per endpoint and service port, as of the last successful sync in which the cluster was synced or served its last known state.
# TYPE kube_outpost_endpoints_programmed gauge
kube_outpost_endpoints_programmed{cluster="beta"} 2
`, "kube_outpost_endpoints_programmed")
}
