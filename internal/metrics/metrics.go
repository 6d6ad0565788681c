// Package metrics exposes what the daemon does as Prometheus metrics:
// kube-proxy's sync metrics under the kube_outpost_ prefix, so that its
// dashboards and alerts carry over, and what an outside host adds: several
// clusters, each watched from afar, and objects refused for safety.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

const namespace = "kube_outpost"

// ClusterStatus is the watch state of one configured cluster.
type ClusterStatus struct {
	Name string
	// Up: the apiserver answers and the cluster has synced, so its
	// changes reach the rules now.
	Up          bool
	Synced      bool
	WatchErrors int
	// WatchRestarts counts, by reason, the cluster's list and watch
	// requests made again by kube-outpost rather than by client-go: one
	// series per key, so the caller gives every reason, with 0 at first.
	WatchRestarts map[string]int
	// RoutesRefused, for a cluster with reach = "routes", counts the pod
	// CIDRs of its Ready nodes that are not routed: outside pod_cidrs,
	// over a protected address, taken by another node, or refused by the
	// kernel. nil for other reaches, which have no such series.
	RoutesRefused *int
	// LastKnownStateFrom, while the cluster has not synced and its
	// rules come from its last known state, is when that was saved.
	LastKnownStateFrom time.Time
	// StateKept: state_dir is set, so the cluster's state is saved;
	// StateSavedAt is when this run last did, StateSaveErrors how often
	// it failed.
	StateKept       bool
	StateSavedAt    time.Time
	StateSaveErrors int
}

// Options configures New.
type Options struct {
	Version string
	Mode    string
	// Clusters and Refusals are read at every scrape, so that a cluster
	// removed by a reload loses its series at once.
	Clusters func() []ClusterStatus
	Refusals func() []model.RefusalCount
	// ServiceConnections, when set (service_metrics), is read at every
	// scrape for kube_outpost_service_connections_total.
	ServiceConnections ConnectionCounts
	// NoBackend, when set, is read at every scrape for
	// kube_outpost_no_backend_total.
	NoBackend NoBackendCount
	// DNS: the DNS server runs, whose queries ObserveDNS counts.
	DNS bool
	Log *slog.Logger
}

// Metrics holds the daemon's metrics in a registry of their own: nothing a
// library registers globally ends up in them.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	syncDuration        prometheus.Histogram
	fullSyncDuration    prometheus.Histogram
	partialSyncDuration prometheus.Histogram
	lastSync            prometheus.Gauge
	lastQueued          prometheus.Gauge
	programming         prometheus.Histogram
	restoreFailures     prometheus.Counter
	syncErrors          prometheus.Counter
	repairs             prometheus.Counter
	services            *prometheus.GaugeVec
	endpoints           *prometheus.GaugeVec
	servicePorts        prometheus.Gauge
	dns                 *dnsMetrics // nil without [dns]

	mu    sync.Mutex
	ports map[string]int // service ports programmed, by cluster
}

// syncBuckets are kube-proxy's: 1 ms to 16 s.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// programmingBuckets are kube-proxy's: the network programming SLO is
// counted in seconds to minutes, not milliseconds.
func programmingBuckets() []float64 {
	b := []float64{0, 0.25, 0.5}
	for s := 1.0; s < 60; s++ {
		b = append(b, s)
	}
	for s := 60.0; s < 120; s += 5 {
		b = append(b, s)
	}
	for s := 120.0; s <= 300; s += 30 {
		b = append(b, s)
	}
	return b
}

// New makes the metrics and registers them, with the Go runtime and process
// collectors.
func New(o Options) *Metrics {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: o.Log,
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_proxy_rules_duration_seconds",
			Help:    "Duration of each sync of the kernel rules, failed ones included.",
			Buckets: syncBuckets,
		}),
		fullSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_full_proxy_rules_duration_seconds",
			Help:    "Duration of each full sync, which rewrites every rule: the first one, the periodic ones, and those after a failure.",
			Buckets: syncBuckets,
		}),
		partialSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_partial_proxy_rules_duration_seconds",
			Help:    "Duration of each partial sync, which rewrites only what changed.",
			Buckets: syncBuckets,
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_last_timestamp_seconds",
			Help: "When the kernel rules were last synced successfully, in seconds since the epoch.",
		}),
		lastQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_last_queued_timestamp_seconds",
			Help: "When a sync was last asked for (a change, or the periodic full sync), in seconds since the epoch.",
		}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "network_programming_duration_seconds",
			Help: "From an EndpointSlice change (its endpoints.kubernetes.io/last-change-trigger-time, " +
				"set by the apiserver's clock) to the end of the sync that programmed it.",
			Buckets: programmingBuckets(),
		}),
		restoreFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_restore_failures_total",
			Help: "Kernel transactions the kernel refused as a whole (an iptables-restore or ip6tables-restore run, in either mode); the previous rules stayed in force.",
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_repairs_total",
			Help: "Full syncs run because objects of ours were found removed behind our back (a firewall reload, a flushed table, a VIP taken off its interface).",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_errors_total",
			Help: "Syncs that failed for any reason; each is retried with backoff.",
		}),
		services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "services_programmed",
			Help: "Services with ClusterIP rules, as of the last successful sync in which the cluster was synced or served its last known state.",
		}, []string{"cluster"}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "endpoints_programmed",
			Help: "Endpoints the rules balance over, one per endpoint and service port, as of the last successful sync in which the cluster was synced or served its last known state.",
		}, []string{"cluster"}),
		servicePorts: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "service_ports_programmed",
			Help: "Service ports (ClusterIP, port, protocol) with rules, of every cluster; those without endpoints are rejected.",
		}),
		ports: map[string]int{},
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels say which version runs in which mode.",
		ConstLabels: prometheus.Labels{"version": o.Version, "mode": o.Mode},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.syncDuration, m.fullSyncDuration, m.partialSyncDuration, m.lastSync, m.lastQueued,
		m.programming, m.restoreFailures, m.syncErrors, m.repairs, m.services, m.endpoints, m.servicePorts,
		newStateCollector(o),
	)
	if o.ServiceConnections != nil {
		m.reg.MustRegister(newConnectionsCollector(o))
	}
	if o.NoBackend != nil {
		m.reg.MustRegister(newNoBackendCollector(o))
	}
	if o.DNS {
		m.dns = newDNSMetrics()
		m.reg.MustRegister(m.dns.queries, m.dns.duration, m.dns.dropped)
	}
	return m
}

// Gatherer is the registry, for tests and for serving.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the metrics in the Prometheus text formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{m.log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("serving metrics", "err", fmt.Sprint(v...)) }

// Queued records that a sync was asked for.
func (m *Metrics) Queued(at time.Time) { m.lastQueued.Set(seconds(at)) }

// Repair counts a full sync asked for because objects of ours were gone.
func (m *Metrics) Repair() { m.repairs.Inc() }

// Sync is what one sync did.
type Sync struct {
	Duration time.Duration
	// End is when it finished.
	End  time.Time
	Full bool
	Err  error
	// TransactionFailures is how many kernel transactions failed in it
	// (proxy.TransactionFailure).
	TransactionFailures int
	// State is the desired state it programmed.
	State *model.State
	// Triggers are the trigger times of the changes State brought; they
	// are observed only when the sync succeeded.
	Triggers []time.Time
}

// ObserveSync records a sync attempt. Like kube-proxy, failed syncs count in
// the duration histograms too: a slow failure is still time spent.
func (m *Metrics) ObserveSync(s Sync) {
	d := s.Duration.Seconds()
	m.syncDuration.Observe(d)
	if s.Full {
		m.fullSyncDuration.Observe(d)
	} else {
		m.partialSyncDuration.Observe(d)
	}
	m.restoreFailures.Add(float64(s.TransactionFailures))
	if s.Err != nil {
		m.syncErrors.Inc()
		return
	}
	m.lastSync.Set(seconds(s.End))
	for _, t := range s.Triggers {
		// An apiserver clock ahead of ours gives a negative latency: the
		// change was programmed as fast as we can tell.
		m.programming.Observe(max(s.End.Sub(t).Seconds(), 0))
	}
	if s.State != nil {
		m.programmed(s.State)
	}
}

// programmed updates the per-cluster counts from the state a sync
// programmed. An unsynced cluster keeps its last counts: backends leave its
// rules as they were. A cluster no longer configured loses its series: its
// rules are gone.
func (m *Metrics) programmed(st *model.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	configured := map[string]bool{}
	for _, c := range st.Clusters {
		configured[c.Name] = true
		if !c.PortsKnown() {
			continue
		}
		services, endpoints := c.Counts()
		m.services.WithLabelValues(c.Name).Set(float64(services))
		m.endpoints.WithLabelValues(c.Name).Set(float64(endpoints))
		m.ports[c.Name] = len(c.Ports)
	}
	total := 0
	for name, n := range m.ports {
		if !configured[name] {
			m.services.DeleteLabelValues(name)
			m.endpoints.DeleteLabelValues(name)
			delete(m.ports, name)
			continue
		}
		total += n
	}
	m.servicePorts.Set(float64(total))
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// stateCollector reads the clusters' watch state and the refusal counters
// at scrape time.
type stateCollector struct {
	o                                  Options
	up, synced, watchErrors, refusedBy *prometheus.Desc
	watchRestarts, routesRefused       *prometheus.Desc
	stale, staleFrom                   *prometheus.Desc
	savedAt, saveErrors                *prometheus.Desc
}

func newStateCollector(o Options) *stateCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &stateCollector{
		o:  o,
		up: desc("cluster_up", "1 while the cluster's apiserver answers every list and watch and the cluster has synced; 0 otherwise (its last rules stay).", "cluster"),
		synced: desc("cluster_synced",
			"1 once the cluster's Services and EndpointSlices have been listed; until then its rules are left as they were.", "cluster"),
		watchErrors: desc("watch_errors_total",
			"List and watch requests to the cluster's apiserver that failed, and watches that broke, since its watch (re)started.", "cluster"),
		watchRestarts: desc("watch_restarts_total",
			"List and watch requests to the cluster's apiserver that kube-outpost made again, since its watch (re)started: silent for 90 s, on a connection found dead, or held while the apiserver did not answer.",
			"cluster", "reason"),
		refusedBy: desc("services_refused_total",
			"Service or EndpointSlice changes refused in whole or in part, once per change and reason (each is also a warning in the log).",
			"cluster", "reason"),
		routesRefused: desc("routes_refused",
			"Pod CIDRs of the cluster's Ready nodes that reach = \"routes\" does not route (each is also a warning in the log and a line in status).",
			"cluster"),
		stale: desc("cluster_stale_state",
			"1 while the cluster has not synced and its rules are programmed from its last known state, saved by an earlier run; 0 otherwise.", "cluster"),
		staleFrom: desc("cluster_stale_state_timestamp_seconds",
			"When the last known state the cluster's rules come from was saved, in seconds since the epoch; only while cluster_stale_state is 1.", "cluster"),
		savedAt: desc("state_saved_timestamp_seconds",
			"When this run last saved the cluster's state to state_dir, in seconds since the epoch; absent before the first time.", "cluster"),
		saveErrors: desc("state_save_errors_total",
			"Saves of the cluster's state to state_dir that failed (too big, or the disk refused); each change of error is also a warning in the log.", "cluster"),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.synced
	ch <- c.watchErrors
	ch <- c.watchRestarts
	ch <- c.refusedBy
	ch <- c.routesRefused
	ch <- c.stale
	ch <- c.staleFrom
	ch <- c.savedAt
	ch <- c.saveErrors
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.o.Clusters != nil {
		for _, st := range c.o.Clusters() {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, bit(st.Up), st.Name)
			ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, bit(st.Synced), st.Name)
			ch <- prometheus.MustNewConstMetric(c.watchErrors, prometheus.CounterValue, float64(st.WatchErrors), st.Name)
			for reason, n := range st.WatchRestarts {
				ch <- prometheus.MustNewConstMetric(c.watchRestarts, prometheus.CounterValue, float64(n), st.Name, reason)
			}
			if st.RoutesRefused != nil {
				ch <- prometheus.MustNewConstMetric(c.routesRefused, prometheus.GaugeValue, float64(*st.RoutesRefused), st.Name)
			}
			ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, bit(!st.LastKnownStateFrom.IsZero()), st.Name)
			if !st.LastKnownStateFrom.IsZero() {
				ch <- prometheus.MustNewConstMetric(c.staleFrom, prometheus.GaugeValue, seconds(st.LastKnownStateFrom), st.Name)
			}
			if st.StateKept {
				ch <- prometheus.MustNewConstMetric(c.saveErrors, prometheus.CounterValue, float64(st.StateSaveErrors), st.Name)
			}
			if !st.StateSavedAt.IsZero() {
				ch <- prometheus.MustNewConstMetric(c.savedAt, prometheus.GaugeValue, seconds(st.StateSavedAt), st.Name)
			}
		}
	}
	if c.o.Refusals != nil {
		for _, r := range c.o.Refusals() {
			ch <- prometheus.MustNewConstMetric(c.refusedBy, prometheus.CounterValue, float64(r.Count), r.Cluster, string(r.Reason))
		}
	}
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
