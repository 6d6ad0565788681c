package model

import (
	"cmp"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"log/slog"
	"maps"
	"net/netip"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// ClusterConfig is what the model needs to know of a configured cluster.
type ClusterConfig struct {
	// Cluster is the cluster's config: its name, ranges, reach and limits
	// as check-config validated them.
	config.Cluster
	// Generation changes when the cluster's source changes (another
	// kubeconfig, context or server): its objects are then dropped and
	// re-listed, and it counts as unsynced until they are, so its rules
	// stay as they were meanwhile.
	Generation int
	// APIServerAddrs are the addresses of the cluster's apiserver, as the
	// daemon found them: no cluster's VIP or external IP may be one, and
	// no other cluster's endpoint (targets.go).
	APIServerAddrs []netip.Addr
}

// limits are what the cluster may make this host hold (limits.go).
func (c *ClusterConfig) limits() Limits {
	return Limits{MaxServices: c.MaxServices, MaxEndpointsPerPort: c.MaxEndpointsPerPort, MaxEndpoints: c.MaxEndpoints,
		ExternalIPs: len(c.AllowExternalIPs) > 0}
}

// Store collects Services and EndpointSlices per cluster and keeps the
// desired ServicePorts up to date as they change. Only the service touched by
// an event is recomputed, so one change costs the same at 10 or 10,000
// services. It is safe for concurrent use.
type Store struct {
	log      *slog.Logger
	warns    *warnLog // warnlog.go
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

	// env is what every service's build shares: this host's addresses and
	// the clusters' ranges. A change to it rebuilds every service.
	env buildEnv
	// order is each cluster's position in the config, which breaks ties
	// between claims of the same address (see claims.go).
	order map[string]int
	// cands are the service ports as built, before conflicts between
	// services are settled: what each one claims.
	cands map[PortKey]*claimant
	// vipClaims and extClaims say which ports claim each VIP:port and
	// external IP:port. They are kept apart because they never meet: an
	// external IP in any cluster's VIP range is refused.
	vipClaims claims
	extClaims claims
	// nodeClaims say which ports serve each node port, per family; the
	// address of a key is the family's unspecified address (nodeports.go).
	nodeClaims claims
	// listeners are the ports local processes listen on (nodeports.go).
	listeners map[listenKey]string
	// revs numbers the changes to every cluster's objects, so that a
	// cluster's revision is never that of another, nor of its own
	// before a restart of its watch (lastknown.go).
	revs uint64
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
	// names are the headless and ExternalName services' (named.go).
	names map[types.NamespacedName]*NamedService
	// built is each service's last build, before conflicts with other
	// services are settled.
	built   map[types.NamespacedName]*builtService
	refused map[types.NamespacedName]string // last reported problems, to warn once per change
	// since is when this data started: a trigger time before it belongs to
	// a change made before we watched, which the first list only reports.
	since time.Time
	// nodes is the last node snapshot (SetNodes), and nodesSynced whether
	// one arrived: a cluster reached through its nodes is not synced
	// before (reach_store.go).
	nodes       []NodeInfo
	nodesSynced bool
	// adm says which services the cluster's limits let be programmed
	// (limits.go).
	adm admission
	// rev is the store's revs at the last change to the objects above,
	// so that whoever keeps them knows when there is something new to
	// keep (lastknown.go).
	rev uint64
	// lastKnown is when the objects above were saved, while they are a
	// kept state and not the apiserver's; live then collects what the
	// informers deliver until it is complete (lastknown.go).
	lastKnown time.Time
	live      *clusterData
}

func newClusterData(since time.Time) *clusterData {
	return &clusterData{
		svcs:    map[types.NamespacedName]*corev1.Service{},
		slices:  map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice{},
		ports:   map[PortKey]*ServicePort{},
		byOwner: map[types.NamespacedName][]PortKey{},
		names:   map[types.NamespacedName]*NamedService{},
		built:   map[types.NamespacedName]*builtService{},
		refused: map[types.NamespacedName]string{},
		since:   since,
	}
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
	s := &Store{log: log, onChange: onChange, now: time.Now, clusters: map[string]*clusterData{},
		refusals: map[string]map[RefusalReason]uint64{}, order: map[string]int{},
		cands: map[PortKey]*claimant{}, vipClaims: claims{}, extClaims: claims{},
		nodeClaims: claims{}, listeners: map[listenKey]string{}}
	s.warns = newWarnLog(log, func() time.Time { return s.now() })
	return s
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
			cd = newClusterData(s.now())
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
	clear(s.order)
	s.env.ranges, s.env.apiservers, s.env.zones = nil, nil, nil
	for i, c := range cfgs {
		s.order[c.Name] = i
		if c.DNSZone != "" {
			s.env.zones = append(s.env.zones, c.DNSZone)
		}
		if c.DNSDefault {
			s.env.zones = append(s.env.zones, config.ClusterLocal)
		}
		for _, p := range effectiveRanges(c.ServiceCIDRs, c.LocalServiceCIDR) {
			s.env.ranges = append(s.env.ranges, ownedRange{cluster: c.Name, prefix: p})
		}
		for _, a := range c.APIServerAddrs {
			s.env.apiservers = append(s.env.apiservers, ownedAddr{cluster: c.Name, addr: a.Unmap().WithZone("")})
		}
	}
	// Another cluster's range, order or settings can change any service's
	// outcome: rebuild all. Reloads are rare; events stay incremental.
	s.rebuildAll()
	s.mu.Unlock()
	s.onChange()
}

// HostFacts are what the model needs to know of this host's network, as
// the daemon last read it from the kernel; the model only compares.
type HostFacts struct {
	// Addrs are this host's own addresses (not ipvs mode's VIPs).
	Addrs []netip.Addr
	// Gateways are the next hops of its default routes.
	Gateways []netip.Addr
}

// SetHostFacts tells the model this host's addresses and default
// gateways, which no endpoint, VIP or external IP may be. Every service
// is built again when they changed, and only then: the daemon calls it at
// every address change and every 30 seconds.
func (s *Store) SetHostFacts(f HostFacts) {
	s.setHost(addrSet(f.Addrs), addrSet(f.Gateways))
}

// SetHostAddrs is SetHostFacts for the addresses alone: the gateways stay
// as they were.
func (s *Store) SetHostAddrs(addrs []netip.Addr) { s.setHost(addrSet(addrs), nil) }

// setHost replaces the host's facts, the gateways only when gws is not
// nil, and builds everything again when that changed something.
func (s *Store) setHost(host, gws map[netip.Addr]bool) {
	s.mu.Lock()
	if gws == nil {
		gws = s.env.gateways
	}
	if maps.Equal(host, s.env.host) && maps.Equal(gws, s.env.gateways) {
		s.mu.Unlock()
		return
	}
	s.env.host, s.env.gateways = host, gws
	changed := s.rebuildAll()
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

func addrSet(addrs []netip.Addr) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a.Unmap().WithZone("")] = true
	}
	return m
}

// SetSynced marks a cluster's informers as having listed everything once.
func (s *Store) SetSynced(cluster string) {
	s.mu.Lock()
	cd := s.clusters[cluster]
	var changed bool
	switch {
	case cd == nil:
	case cd.live != nil:
		cd.live.synced = true
		changed = s.replaceLastKnown(cd) // lastknown.go
	case !cd.synced:
		cd.synced = true
		cd.rev = s.nextRev()
		changed = true
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
	nn, ok := SliceOwner(es)
	if !ok {
		return
	}
	s.update(cluster, nn, triggerTime(es), func(cd *clusterData) {
		m := cd.slices[nn]
		if m == nil {
			m = map[string]*discoveryv1.EndpointSlice{}
			cd.slices[nn] = m
		}
		cd.adm.sliceChanged(nn, m[es.Name], es) // limits.go
		m[es.Name] = es
	})
}

// DeleteSlice records an EndpointSlice deletion. Like kube-proxy, it
// measures no latency: a deleted slice's trigger time is that of its last
// update, not of its deletion.
func (s *Store) DeleteSlice(cluster string, es *discoveryv1.EndpointSlice) {
	nn, ok := SliceOwner(es)
	if !ok {
		return
	}
	s.update(cluster, nn, time.Time{}, func(cd *clusterData) {
		if m := cd.slices[nn]; m != nil {
			if old := m[es.Name]; old != nil {
				cd.adm.sliceChanged(nn, old, nil) // limits.go
			}
			delete(m, es.Name)
			if len(m) == 0 {
				delete(cd.slices, nn)
			}
		}
	})
}

// SliceOwner is the service an EndpointSlice belongs to, by its
// kubernetes.io/service-name label; false when it has none.
func SliceOwner(es *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
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
	if cd.live != nil {
		// A kept state is served until the informers have it all:
		// half of it replaced by half of a list would be neither.
		mutate(cd.live)
		s.mu.Unlock()
		return
	}
	mutate(cd)
	cd.rev = s.nextRev()
	changed := s.recompute(cd, nn)
	if changed && trigger.After(cd.since) && len(s.triggers) < maxTriggers {
		s.triggers = append(s.triggers, trigger)
	}
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

// recompute rebuilds the ServicePorts of one service, settles its claims
// against the other services', and reports whether the desired state
// changed. Only the services that share an address with it are looked at
// again.
func (s *Store) recompute(cd *clusterData, nn types.NamespacedName) bool {
	// The limits first: the change can let in or push out other services
	// of the cluster, which are built again too.
	others := cd.adm.update(nn, cd.svcs[nn])
	changed := s.recomputeOne(cd, nn)
	for _, o := range others {
		if o != nn && s.recomputeOne(cd, o) {
			changed = true
		}
	}
	return changed
}

// recomputeOne is recompute for one service, its admission decided.
func (s *Store) recomputeOne(cd *clusterData, nn types.NamespacedName) bool {
	old := cd.built[nn]
	b := s.build(cd, nn)
	touchedV, touchedE := map[claimKey]bool{}, map[claimKey]bool{}
	for _, bs := range []*builtService{old, b} {
		if bs == nil {
			continue
		}
		for _, p := range bs.ports {
			touchedV[vipKey(p)] = true
			for _, k := range extKeys(p) {
				touchedE[k] = true
			}
		}
	}
	touchedN := nodeKeysOf(old, b)
	s.unclaim(old)
	s.claim(b)
	affected := s.affected(touchedV, touchedE)
	s.addNodeClaimants(affected, touchedN)
	affected[owner{cd.cfg.Name, nn}] = true
	changed := false
	for _, o := range sortedOwners(affected) {
		if c := s.clusters[o.cluster]; c != nil && s.materialize(c, o.nn) {
			changed = true
		}
	}
	return changed
}

// build runs buildService for one service and records the result in
// cd.built; it returns the record, nil when the service yields nothing.
func (s *Store) build(cd *clusterData, nn types.NamespacedName) *builtService {
	if why := cd.adm.refusal(nn); why.Msg != "" {
		// Over a limit: not even built, which is what bounds the work.
		b := &builtService{problems: []Problem{why}}
		cd.built[nn] = b
		return b
	}
	var sliceList []*discoveryv1.EndpointSlice
	for _, es := range cd.slices[nn] {
		sliceList = append(sliceList, es)
	}
	// Map iteration order must not leak into the result: same input, same rules.
	sort.Slice(sliceList, func(i, j int) bool { return sliceList[i].Name < sliceList[j].Name })

	svc := cd.svcs[nn]
	if svc != nil && named(svc) {
		n, problems := buildNamed(cd.cfg, &s.env, svc, sliceList) // named.go
		if n == nil && len(problems) == 0 {
			delete(cd.built, nn)
			return nil
		}
		b := &builtService{named: n, problems: problems, created: svc.CreationTimestamp.Time}
		cd.built[nn] = b
		return b
	}
	cfg := cd.cfg
	if cfg.Reach == reach.NodePort {
		// endpoint_cidrs says where packets may go, and with reach =
		// "nodeport" they go to the nodes, not the pods.
		cfg.EndpointCIDRs = nil
	}
	res := buildService(cfg, &s.env, svc, sliceList)
	if cd.cfg.Reach == reach.NodePort {
		reachViaNodePorts(cd.cfg, &s.env, cd.nodes, svc, sliceList, &res) // reach_store.go
	}
	if len(res.ports) == 0 && len(res.problems) == 0 {
		delete(cd.built, nn)
		return nil
	}
	b := &builtService{ports: res.ports, problems: res.problems}
	if svc != nil {
		b.created = svc.CreationTimestamp.Time
	}
	cd.built[nn] = b
	return b
}

// rebuildAll builds every service of every cluster again and settles all
// claims from scratch; it reports whether the desired state changed.
func (s *Store) rebuildAll() bool {
	clear(s.cands)
	clear(s.vipClaims)
	clear(s.extClaims)
	clear(s.nodeClaims)
	for _, cd := range s.clusters {
		clear(cd.built)
		cd.adm.reset(cd.cfg.limits(), cd.svcs, cd.slices)
		for nn := range cd.svcs {
			s.claim(s.build(cd, nn))
		}
	}
	changed := false
	for _, cd := range s.clusters {
		owners := map[types.NamespacedName]bool{}
		for nn := range cd.built {
			owners[nn] = true
		}
		for nn := range cd.byOwner {
			owners[nn] = true
		}
		for nn := range cd.refused {
			owners[nn] = true
		}
		for nn := range cd.names {
			owners[nn] = true
		}
		for nn := range owners {
			if s.materialize(cd, nn) {
				changed = true
			}
		}
	}
	return changed
}

// materialize publishes one service's ports as its build and the settled
// claims make them, and reports whether that changed the desired state.
func (s *Store) materialize(cd *clusterData, nn types.NamespacedName) bool {
	var ports []*ServicePort
	var problems []Problem
	var names *NamedService
	if b := cd.built[nn]; b != nil {
		ports, problems = s.settle(b)
		names = b.named
	}
	s.report(cd, nn, problems)

	changed := false
	if old := cd.names[nn]; !old.Equal(names) {
		if names == nil {
			delete(cd.names, nn)
		} else {
			cd.names[nn] = names
		}
		changed = true
	}
	newKeys := make(map[PortKey]bool, len(ports))
	for _, p := range ports {
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
	if len(ports) == 0 {
		delete(cd.byOwner, nn)
	} else {
		keys := make([]PortKey, 0, len(ports))
		for _, p := range ports {
			keys = append(keys, p.Key)
		}
		cd.byOwner[nn] = keys
	}
	return changed
}

// report logs a service's problems when they differ from the last ones, so a
// hostile or broken object warns once per change, not once per sync, and
// in one line, rate-limited per cluster (warnlog.go).
func (s *Store) report(cd *clusterData, nn types.NamespacedName, problems []Problem) {
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
	s.warns.object(cd.cfg.Name, nn.String(), messages(problems))
	seen := map[RefusalReason]bool{}
	for _, p := range problems {
		// Once per reason: two bad endpoints in one change are one
		// refusal of that change.
		r := cmp.Or(p.Reason, ReasonOther)
		if !seen[r] {
			seen[r] = true
			counts[r]++
		}
	}
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
		endpoints := 0
		for k, v := range cd.ports {
			ports[k] = v
			endpoints += len(v.Endpoints)
		}
		var names map[types.NamespacedName]*NamedService
		if len(cd.names) > 0 {
			names = maps.Clone(cd.names)
		}
		st.Clusters = append(st.Clusters, &ClusterState{
			Name:             cd.cfg.Name,
			ServiceCIDRs:     cd.cfg.ServiceCIDRs,
			LocalServiceCIDR: cd.cfg.LocalServiceCIDR,
			AllowExternalIPs: cd.cfg.AllowExternalIPs,
			Synced:           cd.synced && cd.nodesReady(),
			LastKnown:        cd.lastKnown,
			Ports:            ports,
			Services:         len(cd.byOwner), // the services that have ports (materialize)
			Endpoints:        endpoints,
			Names:            names,
			ServeNodePorts:   cd.cfg.ServeNodePorts,
		})
	}
	sort.Slice(st.Clusters, func(i, j int) bool { return st.Clusters[i].Name < st.Clusters[j].Name })
	st.HostAddrs = s.hostAddrs()
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
