package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// fakeDaemon stands in for what the daemon reports at scrape time.
type fakeDaemon struct {
	mu       sync.Mutex
	clusters []ClusterStatus
	refusals []model.RefusalCount
}

func (f *fakeDaemon) Clusters() []ClusterStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clusters
}

func (f *fakeDaemon) Refusals() []model.RefusalCount {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refusals
}

func newTest() (*Metrics, *fakeDaemon) {
	f := &fakeDaemon{}
	return New(Options{Version: "1.2.3", Mode: "iptables", Clusters: f.Clusters, Refusals: f.Refusals}), f
}

// compare checks the named metrics against their text exposition.
func compare(t *testing.T, m *Metrics, want string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

// port makes a service port of svc with n endpoints.
func port(cluster, svc, name string, n int) *model.ServicePort {
	p := &model.ServicePort{Key: model.PortKey{Cluster: cluster, Namespace: "ns", Name: svc, Port: name, Protocol: model.TCP}}
	for i := range n {
		p.Endpoints = append(p.Endpoints, model.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080)})
	}
	return p
}

func cluster(name string, synced bool, ports ...*model.ServicePort) *model.ClusterState {
	c := &model.ClusterState{Name: name, Synced: synced, Ports: map[model.PortKey]*model.ServicePort{}}
	for _, p := range ports {
		c.Ports[p.Key] = p
	}
	return c
}

func TestBuildInfoAndLint(t *testing.T) {
	m, _ := newTest()
	compare(t, m, `
# HELP kube_outpost_build_info Always 1; the labels say which version runs in which mode.
# TYPE kube_outpost_build_info gauge
kube_outpost_build_info{mode="iptables",version="1.2.3"} 1
`, "kube_outpost_build_info")
	problems, err := testutil.GatherAndLint(m.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if n, err := testutil.GatherAndCount(m.Gatherer(), name); err != nil || n != 1 {
			t.Errorf("%s: %d series (%v), want the runtime and process collectors' one", name, n, err)
		}
	}
}

func TestObserveSync(t *testing.T) {
	m, _ := newTest()
	end := time.Unix(1_700_000_000, 500_000_000)
	st := &model.State{Clusters: []*model.ClusterState{
		// Two services, three ports: web has two ports with two
		// endpoints each, db one port without endpoints.
		cluster("alpha", true, port("alpha", "web", "http", 2), port("alpha", "web", "https", 2), port("alpha", "db", "", 0)),
		// Not synced yet: its rules are left as they were, so it has no
		// counts to report.
		cluster("beta", false, port("beta", "web", "", 5)),
	}}
	m.Queued(end.Add(-time.Second))
	m.ObserveSync(Sync{
		Duration: 30 * time.Millisecond, End: end, Full: true, State: st,
		Triggers: []time.Time{end.Add(-1500 * time.Millisecond), end.Add(-200 * time.Millisecond), end.Add(time.Second)},
	})
	compare(t, m, `
# HELP kube_outpost_services_programmed Services with ClusterIP rules, as of the last successful sync in which the cluster was synced or served its last known state.
# TYPE kube_outpost_services_programmed gauge
kube_outpost_services_programmed{cluster="alpha"} 2
# HELP kube_outpost_endpoints_programmed Endpoints the rules balance over, one per endpoint and service port, as of the last successful sync in which the cluster was synced or served its last known state.
# TYPE kube_outpost_endpoints_programmed gauge
kube_outpost_endpoints_programmed{cluster="alpha"} 4
# HELP kube_outpost_service_ports_programmed Service ports (ClusterIP, port, protocol) with rules, of every cluster; those without endpoints are rejected.
# TYPE kube_outpost_service_ports_programmed gauge
kube_outpost_service_ports_programmed 3
# HELP kube_outpost_sync_proxy_rules_last_timestamp_seconds When the kernel rules were last synced successfully, in seconds since the epoch.
# TYPE kube_outpost_sync_proxy_rules_last_timestamp_seconds gauge
kube_outpost_sync_proxy_rules_last_timestamp_seconds 1.7000000005e+09
# HELP kube_outpost_sync_proxy_rules_last_queued_timestamp_seconds When a sync was last asked for (a change, or the periodic full sync), in seconds since the epoch.
# TYPE kube_outpost_sync_proxy_rules_last_queued_timestamp_seconds gauge
kube_outpost_sync_proxy_rules_last_queued_timestamp_seconds 1.6999999995e+09
`, "kube_outpost_services_programmed", "kube_outpost_endpoints_programmed", "kube_outpost_service_ports_programmed",
		"kube_outpost_sync_proxy_rules_last_timestamp_seconds", "kube_outpost_sync_proxy_rules_last_queued_timestamp_seconds")

	// The latencies: 1.5 s, 0.2 s, and 0 for a trigger time ahead of our
	// clock.
	h := histogram(t, m, "kube_outpost_network_programming_duration_seconds")
	if h.count != 3 || h.sum < 1.69 || h.sum > 1.71 || h.le["0"] != 1 || h.le["0.25"] != 2 || h.le["1"] != 2 || h.le["2"] != 3 {
		t.Errorf("network programming histogram %+v, want 3 observations: 0, 0.2 and 1.5", h)
	}
	if h := histogram(t, m, "kube_outpost_sync_proxy_rules_duration_seconds"); h.count != 1 || h.le["0.032"] != 1 || h.le["0.016"] != 0 {
		t.Errorf("sync duration histogram %+v, want one observation of 30ms", h)
	}
	if h := histogram(t, m, "kube_outpost_sync_full_proxy_rules_duration_seconds"); h.count != 1 {
		t.Errorf("full sync histogram %+v, want one observation", h)
	}
	if h := histogram(t, m, "kube_outpost_sync_partial_proxy_rules_duration_seconds"); h.count != 0 {
		t.Errorf("partial sync histogram %+v, want none", h)
	}

	// A failed partial sync: counted, timed, but it programmed nothing,
	// so neither the counts nor the last sync time nor the latencies move.
	m.ObserveSync(Sync{
		Duration: 5 * time.Millisecond, End: end.Add(time.Minute), Err: errors.New("iptables-restore: exit status 1"),
		TransactionFailures: 2, State: &model.State{}, Triggers: []time.Time{end},
	})
	if v := testutil.ToFloat64(m.restoreFailures); v != 2 {
		t.Errorf("restore failures %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.syncErrors); v != 1 {
		t.Errorf("sync errors %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.lastSync); v != 1.7000000005e+09 {
		t.Errorf("last sync %v moved with a failed sync", v)
	}
	if h := histogram(t, m, "kube_outpost_network_programming_duration_seconds"); h.count != 3 {
		t.Errorf("a failed sync observed latencies: %+v", h)
	}
	if h := histogram(t, m, "kube_outpost_sync_partial_proxy_rules_duration_seconds"); h.count != 1 {
		t.Errorf("partial sync histogram %+v, want the failed sync", h)
	}
	if v := testutil.ToFloat64(m.services.WithLabelValues("alpha")); v != 2 {
		t.Errorf("services of alpha %v after a failed sync, want 2", v)
	}

	// Beta syncs, and alpha restarts (unsynced again after a reload): alpha
	// keeps the counts of its rules, which stay in place meanwhile.
	st = &model.State{Clusters: []*model.ClusterState{
		cluster("alpha", false),
		cluster("beta", true, port("beta", "web", "", 5)),
	}}
	m.ObserveSync(Sync{Duration: time.Millisecond, End: end.Add(2 * time.Minute), State: st})
	compare(t, m, `
# HELP kube_outpost_services_programmed Services with ClusterIP rules, as of the last successful sync in which the cluster was synced or served its last known state.
# TYPE kube_outpost_services_programmed gauge
kube_outpost_services_programmed{cluster="alpha"} 2
kube_outpost_services_programmed{cluster="beta"} 1
# HELP kube_outpost_service_ports_programmed Service ports (ClusterIP, port, protocol) with rules, of every cluster; those without endpoints are rejected.
# TYPE kube_outpost_service_ports_programmed gauge
kube_outpost_service_ports_programmed 4
`, "kube_outpost_services_programmed", "kube_outpost_service_ports_programmed")

	// Alpha is removed by a reload: once a sync removed its rules, its
	// series go.
	st = &model.State{Clusters: []*model.ClusterState{cluster("beta", true, port("beta", "web", "", 5))}}
	m.ObserveSync(Sync{Duration: time.Millisecond, End: end.Add(3 * time.Minute), State: st})
	compare(t, m, `
# HELP kube_outpost_endpoints_programmed Endpoints the rules balance over, one per endpoint and service port, as of the last successful sync in which the cluster was synced or served its last known state.
# TYPE kube_outpost_endpoints_programmed gauge
kube_outpost_endpoints_programmed{cluster="beta"} 5
# HELP kube_outpost_service_ports_programmed Service ports (ClusterIP, port, protocol) with rules, of every cluster; those without endpoints are rejected.
# TYPE kube_outpost_service_ports_programmed gauge
kube_outpost_service_ports_programmed 1
`, "kube_outpost_endpoints_programmed", "kube_outpost_service_ports_programmed")
}

func TestClusterState(t *testing.T) {
	m, f := newTest()
	f.clusters = []ClusterStatus{
		{Name: "alpha", Up: true, Synced: true, WatchRestarts: map[string]int{"silent": 0, "apiserver_back": 0}},
		{Name: "beta", Synced: true, WatchErrors: 7, RoutesRefused: new(int), WatchRestarts: map[string]int{"silent": 2, "apiserver_back": 1}},
	}
	*f.clusters[1].RoutesRefused = 3
	f.refusals = []model.RefusalCount{
		{Cluster: "alpha", Reason: model.ReasonExternalIPs, Count: 2},
		{Cluster: "beta", Reason: model.ReasonUnsafeEndpoint, Count: 1},
	}
	compare(t, m, `
# HELP kube_outpost_cluster_up 1 while the cluster's apiserver answers every list and watch and the cluster has synced; 0 otherwise (its last rules stay).
# TYPE kube_outpost_cluster_up gauge
kube_outpost_cluster_up{cluster="alpha"} 1
kube_outpost_cluster_up{cluster="beta"} 0
# HELP kube_outpost_cluster_synced 1 once the cluster's Services and EndpointSlices have been listed; until then its rules are left as they were.
# TYPE kube_outpost_cluster_synced gauge
kube_outpost_cluster_synced{cluster="alpha"} 1
kube_outpost_cluster_synced{cluster="beta"} 1
# HELP kube_outpost_watch_errors_total List and watch requests to the cluster's apiserver that failed, and watches that broke, since its watch (re)started.
# TYPE kube_outpost_watch_errors_total counter
kube_outpost_watch_errors_total{cluster="alpha"} 0
kube_outpost_watch_errors_total{cluster="beta"} 7
# HELP kube_outpost_watch_restarts_total List and watch requests to the cluster's apiserver that kube-outpost made again, since its watch (re)started: silent for 90 s, on a connection found dead, or held while the apiserver did not answer.
# TYPE kube_outpost_watch_restarts_total counter
kube_outpost_watch_restarts_total{cluster="alpha",reason="apiserver_back"} 0
kube_outpost_watch_restarts_total{cluster="alpha",reason="silent"} 0
kube_outpost_watch_restarts_total{cluster="beta",reason="apiserver_back"} 1
kube_outpost_watch_restarts_total{cluster="beta",reason="silent"} 2
# HELP kube_outpost_services_refused_total Service or EndpointSlice changes refused in whole or in part, once per change and reason (each is also a warning in the log).
# TYPE kube_outpost_services_refused_total counter
kube_outpost_services_refused_total{cluster="alpha",reason="external_ips"} 2
kube_outpost_services_refused_total{cluster="beta",reason="unsafe_endpoint"} 1
# HELP kube_outpost_routes_refused Pod CIDRs of the cluster's Ready nodes that reach = "routes" does not route (each is also a warning in the log and a line in status).
# TYPE kube_outpost_routes_refused gauge
kube_outpost_routes_refused{cluster="beta"} 3
`, "kube_outpost_cluster_up", "kube_outpost_cluster_synced", "kube_outpost_watch_errors_total", "kube_outpost_watch_restarts_total",
		"kube_outpost_services_refused_total",
		"kube_outpost_routes_refused")

	// A reload drops beta: its series go with the next scrape.
	f.mu.Lock()
	f.clusters, f.refusals = f.clusters[:1], f.refusals[:1]
	f.mu.Unlock()
	for name, want := range map[string]int{
		"kube_outpost_cluster_up": 1, "kube_outpost_cluster_synced": 1,
		"kube_outpost_watch_errors_total": 1, "kube_outpost_watch_restarts_total": 2, "kube_outpost_services_refused_total": 1,
	} {
		if n, err := testutil.GatherAndCount(m.Gatherer(), name); err != nil || n != want {
			t.Errorf("%s: %d series (%v) after beta was dropped, want %d", name, n, err, want)
		}
	}
}

func TestHandler(t *testing.T) {
	m, _ := newTest()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `kube_outpost_build_info{mode="iptables",version="1.2.3"} 1`) {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
}

type hist struct {
	count uint64
	sum   float64
	le    map[string]uint64 // cumulative count by upper bound, as exposed
}

// histogram reads an unlabelled histogram from the registry.
func histogram(t *testing.T, m *Metrics, name string) hist {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		out := hist{count: h.GetSampleCount(), sum: h.GetSampleSum(), le: map[string]uint64{}}
		for _, b := range h.GetBucket() {
			out.le[strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)] = b.GetCumulativeCount()
		}
		return out
	}
	t.Fatalf("no metric %s", name)
	return hist{}
}
