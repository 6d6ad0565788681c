package model

import (
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

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
	now      func() time.Time // tests set it

	mu       sync.Mutex
	clusters map[string]*clusterData
	// triggers are the last-change-trigger-times of the slice changes that
	// reached the desired state since the last Checkout: the sync that
	// programs that state ends their network programming latency.
	triggers []time.Time
	// refusals counts refused object changes by cluster and reason. Kept
	// by cluster name, so that a cluster restarted by a reload keeps
	// counting; dropped with the cluster.
	refusals map[string]map[RefusalReason]uint64
}

// maxTriggers bounds the trigger times kept while syncs fail, so that a
// busy cluster cannot grow them without limit; the latencies of changes
// past it are not observed.
const maxTriggers = 10000

type clusterData struct {
	cfg     ClusterConfig
	synced  bool
	svcs    map[types.NamespacedName]*corev1.Service
	slices  map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice // by service, then slice name
	ports   map[PortKey]*ServicePort
	byOwner map[types.NamespacedName][]PortKey // the keys each service produced
	refused map[types.NamespacedName]string    // last reported problems, to warn once per change
	// since is when this data started: a trigger time before it belongs to
	// a change made before we watched, which the first list only reports.
	since time.Time
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
	return &Store{log: log, onChange: onChange, now: time.Now, clusters: map[string]*clusterData{},
		refusals: map[string]map[RefusalReason]uint64{}}
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
				since:   s.now(),
			}
		}
		cd.cfg = c
		next[c.Name] = cd
	}
	s.clusters = next
	for name := range s.refusals {
		if next[name] == nil {
			delete(s.refusals, name)
		}
	}
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
	s.update(cluster, nn, time.Time{}, func(cd *clusterData) { cd.svcs[nn] = svc })
}

// DeleteService records a Service deletion.
func (s *Store) DeleteService(cluster, namespace, name string) {
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	s.update(cluster, nn, time.Time{}, func(cd *clusterData) { delete(cd.svcs, nn) })
}

// UpsertSlice records an EndpointSlice add or update.
func (s *Store) UpsertSlice(cluster string, es *discoveryv1.EndpointSlice) {
	nn, ok := sliceOwner(es)
	if !ok {
		return
	}
	s.update(cluster, nn, triggerTime(es), func(cd *clusterData) {
		m := cd.slices[nn]
		if m == nil {
			m = map[string]*discoveryv1.EndpointSlice{}
			cd.slices[nn] = m
		}
		m[es.Name] = es
	})
}

// DeleteSlice records an EndpointSlice deletion. Like kube-proxy, it
// measures no latency: a deleted slice's trigger time is that of its last
// update, not of its deletion.
func (s *Store) DeleteSlice(cluster string, es *discoveryv1.EndpointSlice) {
	nn, ok := sliceOwner(es)
	if !ok {
		return
	}
	s.update(cluster, nn, time.Time{}, func(cd *clusterData) {
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

// triggerTime is the slice's last-change-trigger-time annotation, zero when
// it has none or an unreadable one.
func triggerTime(es *discoveryv1.EndpointSlice) time.Time {
	v, ok := es.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// update applies mutate to a cluster's objects and recomputes the one service
// it concerns. Events for clusters no longer configured are ignored. A
// non-zero trigger is kept for the network programming latency, but only
// when the desired state changed: a no-op change triggers no sync, and would
// be measured up to some later, unrelated one.
func (s *Store) update(cluster string, nn types.NamespacedName, trigger time.Time, mutate func(*clusterData)) {
	s.mu.Lock()
	cd := s.clusters[cluster]
	if cd == nil {
		s.mu.Unlock()
		return
	}
	mutate(cd)
	changed := s.recompute(cd, nn)
	if changed && trigger.After(cd.since) && len(s.triggers) < maxTriggers {
		s.triggers = append(s.triggers, trigger)
	}
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
	counts := s.refusals[cd.cfg.Name]
	if counts == nil {
		counts = map[RefusalReason]uint64{}
		s.refusals[cd.cfg.Name] = counts
	}
	seen := map[RefusalReason]bool{}
	for _, p := range problems {
		s.log.Warn("service not fully programmed", "cluster", cd.cfg.Name, "service", nn.String(), "reason", p)
		// Once per reason: two bad endpoints in one change are one
		// refusal of that change.
		if r := reasonOf(p); !seen[r] {
			seen[r] = true
			counts[r]++
		}
	}
}

// RefusalReason classifies a problem for metrics: a small fixed set of
// label values, never a problem's text, which names objects and addresses.
type RefusalReason string

const (
	ReasonExternalIPs         RefusalReason = "external_ips"
	ReasonOutsideServiceCIDRs RefusalReason = "outside_service_cidrs"
	ReasonInvalidClusterIP    RefusalReason = "invalid_cluster_ip"
	ReasonUnsupportedProtocol RefusalReason = "unsupported_protocol"
	ReasonInvalidPort         RefusalReason = "invalid_port"
	ReasonDuplicatePort       RefusalReason = "duplicate_port"
	ReasonInvalidEndpoint     RefusalReason = "invalid_endpoint"
	ReasonUnsafeEndpoint      RefusalReason = "unsafe_endpoint"
	ReasonOther               RefusalReason = "other"
)

// reasonOf classifies a problem of buildService by its wording, which is
// all buildService gives. TestRefusalReasons produces every problem it can
// report and pins each to its reason, so a reworded message fails there
// instead of quietly counting as "other".
func reasonOf(problem string) RefusalReason {
	switch {
	case strings.HasPrefix(problem, "spec.externalIPs"):
		return ReasonExternalIPs
	case strings.HasPrefix(problem, "spec.clusterIPs") && strings.Contains(problem, "outside the cluster's service_cidrs"):
		return ReasonOutsideServiceCIDRs
	case strings.HasPrefix(problem, "spec.clusterIPs") && strings.HasSuffix(problem, "is not an IP address"):
		return ReasonInvalidClusterIP
	case strings.HasPrefix(problem, "spec.ports") && strings.HasSuffix(problem, "is not supported"):
		return ReasonUnsupportedProtocol
	case strings.HasPrefix(problem, "spec.ports") && strings.HasSuffix(problem, "is out of range"):
		return ReasonInvalidPort
	case strings.HasPrefix(problem, "spec.ports") && strings.Contains(problem, "duplicate port name"):
		return ReasonDuplicatePort
	case strings.HasPrefix(problem, "EndpointSlice ") && strings.HasSuffix(problem, ": dropped"):
		if strings.Contains(problem, "is not an IP address") || strings.Contains(problem, "has an IPv6 zone") {
			return ReasonInvalidEndpoint
		}
		return ReasonUnsafeEndpoint
	}
	return ReasonOther
}

// RefusalCount is how many object changes of a cluster were refused, in
// whole or in part, for one reason.
type RefusalCount struct {
	Cluster string
	Reason  RefusalReason
	Count   uint64
}

// RefusalCounts returns the refusal counters of the configured clusters,
// sorted. They follow the warnings: a refused object change counts once for
// each reason its warning gives, and resyncs or syncs count nothing.
func (s *Store) RefusalCounts() []RefusalCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RefusalCount
	for cluster, counts := range s.refusals {
		for r, n := range counts {
			out = append(out, RefusalCount{Cluster: cluster, Reason: r, Count: n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

// Snapshot returns the desired state of every cluster. The maps are copies;
// the ServicePorts are shared and immutable.
func (s *Store) Snapshot() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot()
}

// Checkout is Snapshot for the sync loop: it also hands over the trigger
// times of the slice changes that reached the desired state since the last
// Checkout. Both are taken under one lock, so every time returned belongs to
// a change the snapshot holds: once it is programmed, so are they.
func (s *Store) Checkout() (*State, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	triggers := s.triggers
	s.triggers = nil
	return s.snapshot(), triggers
}

func (s *Store) snapshot() *State {
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
