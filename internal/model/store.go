package model

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ClusterConfig is what the model needs to know of a configured cluster.
type ClusterConfig struct {
	Name         string
	ServiceCIDRs []netip.Prefix
	// Generation changes when the cluster's source changes (another
	// kubeconfig, context or server): its objects are then dropped and
	// re-listed, and it counts as unsynced until they are, so its rules
	// stay as they were meanwhile.
	Generation int
}

// Store collects Services and EndpointSlices per cluster and keeps the
// desired ServicePorts up to date as they change. Only the service touched by
// an event is recomputed, so one change costs the same at 10 or 10,000
// services. It is safe for concurrent use.
type Store struct {
	log      *slog.Logger
	onChange func()

	mu       sync.Mutex
	clusters map[string]*clusterData
}

type clusterData struct {
	cfg     ClusterConfig
	synced  bool
	svcs    map[types.NamespacedName]*corev1.Service
	slices  map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice // by service, then slice name
	ports   map[PortKey]*ServicePort
	byOwner map[types.NamespacedName][]PortKey // the keys each service produced
	refused map[types.NamespacedName]string    // last reported problems, to warn once per change
}

// NewStore makes an empty store. onChange is called, without locks held,
// after every change to the desired state; it must not block.
func NewStore(log *slog.Logger, onChange func()) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func() {}
	}
	return &Store{log: log, onChange: onChange, clusters: map[string]*clusterData{}}
}

// SetClusters replaces the set of configured clusters. Clusters that stay
// keep their data; removed ones are dropped (and so are their rules).
func (s *Store) SetClusters(cfgs []ClusterConfig) {
	s.mu.Lock()
	next := make(map[string]*clusterData, len(cfgs))
	for _, c := range cfgs {
		cd := s.clusters[c.Name]
		if cd == nil || cd.cfg.Generation != c.Generation || !samePrefixes(cd.cfg.ServiceCIDRs, c.ServiceCIDRs) {
			// A new source or range: start from scratch; the daemon
			// restarts the informers of a changed cluster.
			cd = &clusterData{
				svcs:    map[types.NamespacedName]*corev1.Service{},
				slices:  map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice{},
				ports:   map[PortKey]*ServicePort{},
				byOwner: map[types.NamespacedName][]PortKey{},
				refused: map[types.NamespacedName]string{},
			}
		}
		cd.cfg = c
		next[c.Name] = cd
	}
	s.clusters = next
	s.mu.Unlock()
	s.onChange()
}

// SetSynced marks a cluster's informers as having listed everything once.
func (s *Store) SetSynced(cluster string) {
	s.mu.Lock()
	cd := s.clusters[cluster]
	changed := cd != nil && !cd.synced
	if changed {
		cd.synced = true
	}
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

// UpsertService records a Service add or update.
func (s *Store) UpsertService(cluster string, svc *corev1.Service) {
	nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	s.update(cluster, nn, func(cd *clusterData) { cd.svcs[nn] = svc })
}

// DeleteService records a Service deletion.
func (s *Store) DeleteService(cluster, namespace, name string) {
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	s.update(cluster, nn, func(cd *clusterData) { delete(cd.svcs, nn) })
}

// UpsertSlice records an EndpointSlice add or update.
func (s *Store) UpsertSlice(cluster string, es *discoveryv1.EndpointSlice) {
	nn, ok := sliceOwner(es)
	if !ok {
		return
	}
	s.update(cluster, nn, func(cd *clusterData) {
		m := cd.slices[nn]
		if m == nil {
			m = map[string]*discoveryv1.EndpointSlice{}
			cd.slices[nn] = m
		}
		m[es.Name] = es
	})
}

// DeleteSlice records an EndpointSlice deletion.
func (s *Store) DeleteSlice(cluster string, es *discoveryv1.EndpointSlice) {
	nn, ok := sliceOwner(es)
	if !ok {
		return
	}
	s.update(cluster, nn, func(cd *clusterData) {
		if m := cd.slices[nn]; m != nil {
			delete(m, es.Name)
			if len(m) == 0 {
				delete(cd.slices, nn)
			}
		}
	})
}

func sliceOwner(es *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
	name := es.Labels[discoveryv1.LabelServiceName]
	return types.NamespacedName{Namespace: es.Namespace, Name: name}, name != ""
}

// update applies mutate to a cluster's objects and recomputes the one service
// it concerns. Events for clusters no longer configured are ignored.
func (s *Store) update(cluster string, nn types.NamespacedName, mutate func(*clusterData)) {
	s.mu.Lock()
	cd := s.clusters[cluster]
	if cd == nil {
		s.mu.Unlock()
		return
	}
	mutate(cd)
	changed := s.recompute(cd, nn)
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

// recompute rebuilds the ServicePorts of one service and reports whether
// the desired state changed.
func (s *Store) recompute(cd *clusterData, nn types.NamespacedName) bool {
	var sliceList []*discoveryv1.EndpointSlice
	for _, es := range cd.slices[nn] {
		sliceList = append(sliceList, es)
	}
	// Map iteration order must not leak into the result: same input, same rules.
	sort.Slice(sliceList, func(i, j int) bool { return sliceList[i].Name < sliceList[j].Name })

	res := buildService(cd.cfg, cd.svcs[nn], sliceList)
	s.report(cd, nn, res.problems)

	changed := false
	newKeys := make(map[PortKey]bool, len(res.ports))
	for _, p := range res.ports {
		newKeys[p.Key] = true
		if old := cd.ports[p.Key]; old.Equal(p) {
			continue // keep the old pointer: backends see "unchanged"
		}
		cd.ports[p.Key] = p
		changed = true
	}
	for _, k := range cd.byOwner[nn] {
		if !newKeys[k] {
			delete(cd.ports, k)
			changed = true
		}
	}
	if len(res.ports) == 0 {
		delete(cd.byOwner, nn)
	} else {
		keys := make([]PortKey, 0, len(res.ports))
		for _, p := range res.ports {
			keys = append(keys, p.Key)
		}
		cd.byOwner[nn] = keys
	}
	return changed
}

// report logs a service's problems when they differ from the last ones, so a
// hostile or broken object warns once per change, not once per sync.
func (s *Store) report(cd *clusterData, nn types.NamespacedName, problems []string) {
	msg := joinProblems(problems)
	if cd.refused[nn] == msg {
		return
	}
	if msg == "" {
		delete(cd.refused, nn)
		return
	}
	cd.refused[nn] = msg
	for _, p := range problems {
		s.log.Warn("service not fully programmed", "cluster", cd.cfg.Name, "service", nn.String(), "reason", p)
	}
}

// Snapshot returns the desired state of every cluster. The maps are copies;
// the ServicePorts are shared and immutable.
func (s *Store) Snapshot() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &State{Clusters: make([]*ClusterState, 0, len(s.clusters))}
	for _, cd := range s.clusters {
		ports := make(map[PortKey]*ServicePort, len(cd.ports))
		for k, v := range cd.ports {
			ports[k] = v
		}
		st.Clusters = append(st.Clusters, &ClusterState{
			Name:         cd.cfg.Name,
			ServiceCIDRs: cd.cfg.ServiceCIDRs,
			Synced:       cd.synced,
			Ports:        ports,
		})
	}
	sort.Slice(st.Clusters, func(i, j int) bool { return st.Clusters[i].Name < st.Clusters[j].Name })
	return st
}

// Refusals lists the services with problems, for status and tests.
func (s *Store) Refusals() []Refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Refusal
	for _, cd := range s.clusters {
		for nn, msg := range cd.refused {
			out = append(out, Refusal{Cluster: cd.cfg.Name, Namespace: nn.Namespace, Name: nn.Name, Reason: msg})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Cluster != b.Cluster {
			return a.Cluster < b.Cluster
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
