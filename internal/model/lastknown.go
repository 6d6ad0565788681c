package model

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A cluster's last known state: the objects its ports were built from, kept
// by the daemon (internal/laststate) and served after a restart while its
// apiserver cannot be reached. They go through the same build as the
// informers' objects, so a kept state is trusted no more than a live one:
// every check runs again, against this run's configuration and this host.

// Objects are what a cluster's service ports are built from.
type Objects struct {
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
	// Nodes is the node list of a cluster reached through its nodes;
	// NodesKnown says that one had arrived.
	Nodes      []NodeInfo
	NodesKnown bool
}

func (s *Store) nextRev() uint64 {
	s.revs++
	return s.revs
}

// LastKnownFrom is when the last known state the cluster serves was saved;
// zero when it serves none.
func (s *Store) LastKnownFrom(cluster string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cd := s.clusters[cluster]; cd != nil {
		return cd.lastKnown
	}
	return time.Time{}
}

// Revision says whether Export would give anything, and the revision it
// would have: a number that changes with every change to the cluster's
// objects. It costs a lookup, so that a caller can poll it.
func (s *Store) Revision(cluster string) (rev uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cd := s.clusters[cluster]
	if cd == nil || !cd.exportable() {
		return 0, false
	}
	return cd.rev, true
}

// exportable: the objects are the apiserver's, all of them. A kept state
// is not kept again (it would only grow older under a newer date), nor is
// half a list.
func (cd *clusterData) exportable() bool {
	return cd.synced && cd.nodesReady() && cd.live == nil
}

// Export returns what the cluster's ports are built from, sorted, and its
// revision; false while Revision says so. Only the services the cluster's
// limits admit and that give ports or refusals are taken, with their
// slices: the others build nothing, and leaving them out bounds what is
// kept by the limits. The objects are shared, not copied: the store never
// modifies one.
func (s *Store) Export(cluster string) (Objects, uint64, bool) {
	s.mu.Lock()
	cd := s.clusters[cluster]
	if cd == nil || !cd.exportable() {
		s.mu.Unlock()
		return Objects{}, 0, false
	}
	var out Objects
	for nn, svc := range cd.svcs {
		if cd.built[nn] == nil || cd.adm.refusal(nn).Msg != "" {
			continue
		}
		out.Services = append(out.Services, svc)
		for _, es := range cd.slices[nn] {
			out.Slices = append(out.Slices, es)
		}
	}
	if cd.cfg.Reach.ThroughNodes() {
		out.Nodes, out.NodesKnown = cd.nodes, true
	}
	rev := cd.rev
	s.mu.Unlock()
	// Sorted outside the lock: the same objects give the same file.
	slices.SortFunc(out.Services, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(out.Slices, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out, rev, true
}

// ServeLastKnown makes objs, saved at savedAt, the cluster's objects until
// its informers have listed everything: the cluster is not synced, but its
// ports are known (ClusterState.LastKnown), so backends program them. What
// the informers deliver meanwhile is collected aside, and replaces the kept
// state in one step once the cluster has synced (and, reached through its
// nodes, has its node list): a service deleted in the meantime goes then,
// and no sync programs half of each.
//
// It is for the start, before the cluster's informers run: a cluster that
// has objects of its own, or is not configured, is refused.
func (s *Store) ServeLastKnown(cluster string, objs Objects, savedAt time.Time) error {
	s.mu.Lock()
	cd := s.clusters[cluster]
	switch {
	case cd == nil:
		s.mu.Unlock()
		return fmt.Errorf("cluster %q is not configured", cluster)
	case cd.synced || cd.live != nil || len(cd.svcs) > 0 || len(cd.slices) > 0 || cd.nodesSynced:
		s.mu.Unlock()
		return fmt.Errorf("cluster %q has objects of its own already", cluster)
	case cd.cfg.Reach.ThroughNodes() && !objs.NodesKnown:
		s.mu.Unlock()
		return fmt.Errorf("cluster %q is reached through its nodes, and the kept state has no node list", cluster)
	case savedAt.IsZero():
		s.mu.Unlock()
		return errors.New("a kept state without the time it was saved")
	}
	for _, es := range objs.Slices {
		if es == nil {
			continue
		}
		nn, ok := SliceOwner(es)
		if !ok || es.Name == "" {
			continue
		}
		m := cd.slices[nn]
		if m == nil {
			m = map[string]*discoveryv1.EndpointSlice{}
			cd.slices[nn] = m
		}
		m[es.Name] = es
	}
	for _, svc := range objs.Services {
		if svc == nil || svc.Name == "" {
			continue
		}
		cd.svcs[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] = svc
	}
	if cd.cfg.Reach.ThroughNodes() {
		cd.nodes, cd.nodesSynced = objs.Nodes, true
	}
	cd.lastKnown = savedAt
	cd.live = newClusterData(cd.since)
	// The whole build, admission first: as if the informers had just
	// delivered it all.
	s.rebuildAll()
	s.mu.Unlock()
	s.onChange()
	return nil
}

// replaceLastKnown makes what the informers collected the cluster's
// objects once it is complete, and reports whether it did.
func (s *Store) replaceLastKnown(cd *clusterData) bool {
	live := cd.live
	if !live.synced || (cd.cfg.Reach.ThroughNodes() && !live.nodesSynced) {
		return false
	}
	s.log.Info("cluster synced: its live state replaces the last known one", "cluster", cd.cfg.Name,
		"last_known_from", cd.lastKnown.Format(time.RFC3339))
	cd.svcs, cd.slices = live.svcs, live.slices
	cd.nodes, cd.nodesSynced = live.nodes, live.nodesSynced
	cd.synced = true
	cd.live, cd.lastKnown = nil, time.Time{}
	cd.rev = s.nextRev()
	s.rebuildAll()
	// Synced changed whatever the ports did.
	return true
}

// LastKnownNodes is the node list of the cluster's last known state while
// it serves one: what reach = "routes" routes meanwhile.
func (s *Store) LastKnownNodes(cluster string) ([]NodeInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cd := s.clusters[cluster]
	if cd == nil || cd.live == nil || !cd.cfg.Reach.ThroughNodes() {
		return nil, false
	}
	return cd.nodes, true
}
