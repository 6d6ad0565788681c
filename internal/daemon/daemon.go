// Package daemon wires the parts together: config -> cluster watchers ->
// model -> kernel backends, with one sync loop in between.
package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/health"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/laststate"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/resolved"
	"github.com/kube-outpost/kube-outpost/internal/routes"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
	"github.com/kube-outpost/kube-outpost/internal/systemd"
)

// Daemon is one running kube-outpost.
type Daemon struct {
	cfg *config.Config
	// mode is the datapath in use: cfg's, or what mode = "auto" chose at
	// start, and modeWhy says why (modes.go). nil with a test's fake
	// backends for a mode that is not registered.
	mode    *proxy.Mode
	modeWhy string
	log     *slog.Logger
	store   *model.Store
	// backends are read through backendList: a reload may add the
	// backend of a new IP family (modes.go).
	backendsMu    sync.RWMutex
	backends      []proxy.Backend
	families      []bool      // the IP families the backends serve
	fixedBackends bool        // given by a test: none is added
	clusters      *clusterSet // clusters.go
	loop          *syncLoop   // syncloop.go
	notifier      *systemd.Notifier
	metrics       *metrics.Metrics
	health        *health.Tracker
	host          hostcheck.Source // this host's addresses and routes
	// lookupHost resolves apiserver host names (host.go); tests fake it.
	lookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
	// components are the optional parts, synced after the backends
	// (component.go).
	components []component
	// dns is the DNS server component, nil without [dns].
	dns *dnsServer
	// resolved registers the DNS server with systemd-resolved
	// (resolved.go), or removes what an earlier configuration left.
	resolved *resolvedReg
	// routes is the component of reach = "routes", which status reads.
	routes *routeSync
	// writer saves the clusters' last known states; nil when state_dir
	// is "" (laststate.go).
	writer *laststate.Writer

	mu      sync.Mutex
	started time.Time

	// startMu orders the first setClusters of Run and the reloads: a
	// SIGHUP that arrives before Run has started the clusters (the signal
	// is caught from the process's start) is kept in early, and Run starts
	// from it.
	startMu sync.Mutex
	running bool
	early   *config.Config
}

// Version is reported in kube_outpost_build_info; set by main.
var Version = "dev"

// New builds a daemon for cfg. Backends are made from cfg.Mode, or from the
// mode that mode = "auto" chooses now, unless given (tests pass fakes).
func New(cfg *config.Config, log *slog.Logger, backends ...proxy.Backend) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, notifier: systemd.NewNotifier(), host: hostSource,
		lookupHost: lookupHost}
	if len(backends) == 0 {
		if err := d.chooseMode(); err != nil { // modes.go
			return nil, err
		}
	} else {
		d.mode = proxy.Lookup(cfg.Mode)
	}
	// kube-proxy's health timeout: a failed sync is retried within
	// SyncPeriod, so twice that is at least one retry that failed too.
	d.health = health.NewTracker(2*cfg.SyncPeriod, nil)
	d.metrics = metrics.New(metrics.Options{
		Version: Version, Mode: d.modeName(), Log: log,
		Clusters: d.clusterStatuses,
		Refusals: func() []model.RefusalCount { return d.store.RefusalCounts() },
		ServiceConnections: func() metrics.ConnectionCounts {
			if cfg.ServiceMetrics {
				return d.connectionCounts
			}
			return nil
		}(),
		NoBackend: d.noBackend,
		DNS:       cfg.DNS.Enabled(),
	})
	var installer *routes.Installer
	if len(backends) == 0 {
		var err error
		d.families = proxy.Families(cfg)
		if backends, err = d.newBackends(d.families); err != nil { // modes.go
			return nil, err
		}
		installer = routes.New(routes.Options{Kernel: routes.NewKernel(nil), Log: log})
	}
	d.backends, d.fixedBackends = backends, installer == nil
	d.store = model.NewStore(log, d.queue)
	d.clusters = newClusterSet(d.store, d.store, log, d.queue)
	d.routes = &routeSync{installer: installer, clusters: d.clusters, store: d.store, host: d.host, log: log}
	d.components = []component{d.routes}
	if cfg.DNS.Enabled() {
		d.dns = newDNSServer(cfg.DNS, d.clusterConfigs, d.metrics, log)
		d.components = append(d.components, d.dns)
	}
	if installer != nil {
		// Only with the real datapath: what systemd passes is this
		// process's, not a test's.
		d.keptSockets()
	}
	// After the DNS server: resolved is told of it once it listens.
	d.resolved = newResolvedReg(cfg.DNS, d.clusterConfigs, log)
	if installer != nil {
		// Only with the real datapath: tests that give fake backends
		// must not touch this machine's resolver.
		d.resolved.dial, d.resolved.links, d.resolved.elsewhere = dialResolved, resolved.Kernel{}, resolved.HostNetns
	}
	d.components = append(d.components, d.resolved)
	d.writer = d.newStateWriter()
	d.loop = &syncLoop{store: d.store, refresh: d.refreshListeners, program: d.program, succeeded: d.syncSucceeded,
		health: d.health, metrics: d.metrics, notifier: d.notifier, log: log, mustFull: true}
	// The periodic run is the full sync; a failed sync is retried within
	// SyncPeriod.
	if installer != nil {
		// Only with the real datapath: tests that give fake backends
		// must not clean up this machine's rules.
		d.loop.onReady = d.otherModeCleanup
	}
	d.loop.runner = syncrunner.New(d.loop.sync, syncrunner.Options{
		MinInterval: cfg.MinSyncPeriod, MaxInterval: cfg.FullSyncPeriod, MaxBackoff: cfg.SyncPeriod,
	})
	return d, nil
}

// Run watches the clusters and keeps the kernel in line until ctx is done.
// It leaves the rules in place when it returns: a restart must not cut
// traffic.
func (d *Daemon) Run(ctx context.Context) error {
	// Whatever Run started ends with it, the HTTP servers included.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// First: a port that is taken must stop the start before anything
	// else happens.
	servers, err := d.listen()
	if err != nil {
		return err
	}
	statusLn, err := d.listenStatus()
	if err != nil {
		closeAll(servers)
		return err
	}
	d.serve(ctx, servers)
	stopStatus := d.serveStatus(ctx, statusLn)
	defer stopStatus()
	started := time.Now()
	d.mu.Lock()
	d.started = started
	d.mu.Unlock()
	d.clusters.setContext(ctx)
	// Before the first service is built: an endpoint at this host's own
	// address must never be programmed, not even for a moment.
	d.refreshHostAddrs()
	if err := d.startClusters(); err != nil {
		return err
	}
	go d.watchHostAddrs(ctx)
	go d.probe(ctx) // probe.go
	if err := d.startComponents(ctx); err != nil {
		return err
	}
	waitWriter := d.runStateWriter(ctx) // laststate.go
	d.log.Info("kube-outpost running", "mode", d.modeName(), "clusters", len(d.cfg.Clusters))
	d.loop.run(ctx, started)
	d.notifier.Notify("STOPPING=1")
	d.stopComponents()
	waitWriter()
	d.clusters.stop()
	d.log.Info("stopping; rules and routes stay in place")
	return nil
}

// Reload applies a new configuration's clusters: new ones start, removed
// ones stop (and their rules go), changed ones restart (their rules stay
// until they have synced again), unchanged ones keep running. Settings
// outside [[clusters]] need a restart. A backend sized from the limits
// (proxy.Sized) grows first, or the reload is refused. On error nothing
// changed.
func (d *Daemon) Reload(cfg *config.Config) error {
	d.startMu.Lock()
	defer d.startMu.Unlock()
	for _, b := range d.backendList() {
		if s, ok := b.(proxy.Sized); ok {
			if err := s.Resize(cfg); err != nil {
				return err
			}
		}
	}
	if !d.running {
		d.early = cfg
		d.log.Info("configuration reloaded before the start; the clusters start from it", "clusters", len(cfg.Clusters))
		return nil
	}
	if diff := globalDiff(d.cfg, cfg); diff != "" {
		d.log.Warn("reload: settings outside [[clusters]] need a restart; keeping the running ones", "changed", diff)
	}
	// Before the clusters: a new family's services need its backend at
	// their first sync.
	if err := d.addFamilies(cfg); err != nil {
		return err
	}
	if err := d.setClusters(cfg.Clusters); err != nil {
		return err
	}
	d.log.Info("configuration reloaded", "clusters", len(cfg.Clusters))
	return nil
}

// startClusters starts the configured clusters, or those of a reload that
// came first.
func (d *Daemon) startClusters() error {
	d.startMu.Lock()
	defer d.startMu.Unlock()
	clusters := d.cfg.Clusters
	if d.early != nil {
		if diff := globalDiff(d.cfg, d.early); diff != "" {
			d.log.Warn("reload: settings outside [[clusters]] need a restart; keeping the running ones", "changed", diff)
		}
		clusters = d.early.Clusters
		if err := d.addFamilies(d.early); err != nil {
			return err
		}
	}
	d.clusters.kept = d.loadLastKnown(clusters) // laststate.go
	if err := d.setClusters(clusters); err != nil {
		return err
	}
	d.running = true
	return nil
}

func globalDiff(a, b *config.Config) string {
	var diff []string
	if a.Mode != b.Mode {
		diff = append(diff, "mode")
	}
	if a.MinSyncPeriod != b.MinSyncPeriod || a.SyncPeriod != b.SyncPeriod || a.FullSyncPeriod != b.FullSyncPeriod {
		diff = append(diff, "sync periods")
	}
	if a.Masquerade != b.Masquerade || a.MasqueradeMark != b.MasqueradeMark {
		diff = append(diff, "masquerade")
	}
	if a.IPVSScheduler != b.IPVSScheduler {
		diff = append(diff, "ipvs_scheduler")
	}
	if a.EBPFCgroup != b.EBPFCgroup || a.EBPFPinDir != b.EBPFPinDir {
		diff = append(diff, "ebpf_cgroup, ebpf_pin_dir")
	}
	if a.MetricsAddress != b.MetricsAddress || a.HealthzAddress != b.HealthzAddress {
		diff = append(diff, "metrics and healthz addresses")
	}
	if a.ServiceMetrics != b.ServiceMetrics {
		diff = append(diff, "service_metrics")
	}
	if a.Profiling != b.Profiling {
		diff = append(diff, "profiling")
	}
	if a.LogFormat != b.LogFormat {
		diff = append(diff, "log_format")
	}
	if !slices.Equal(a.RoutedClients, b.RoutedClients) {
		diff = append(diff, "routed_clients")
	}
	if a.StateDir != b.StateDir || a.StaleStateMaxAge != b.StaleStateMaxAge {
		diff = append(diff, "state_dir, stale_state_max_age")
	}
	if !slices.Equal(a.DNS.Listen, b.DNS.Listen) || a.DNS.TTL != b.DNS.TTL || a.DNS.Resolved != b.DNS.Resolved || a.DNS.MaxQPS != b.DNS.MaxQPS {
		diff = append(diff, "dns")
	}
	return strings.Join(diff, ", ")
}

// program makes the kernel match st: the backends, then the components.
// The sync loop calls it, one sync at a time (syncloop.go).
func (d *Daemon) program(ctx context.Context, st *model.State, full bool) (int, error) {
	var errs []error
	transactionFailures := 0
	for _, b := range d.backendList() {
		if err := b.Sync(ctx, st, full); err != nil {
			errs = append(errs, err)
			var tf proxy.TransactionFailure
			if errors.As(err, &tf) {
				transactionFailures++
			}
		}
	}
	// After the backends: a route only makes pod IPs reachable, which
	// DNAT rules already pointing there need, and a component's failure
	// must not hold back the rules of every cluster.
	for _, c := range d.components {
		if err := c.Sync(ctx, st); err != nil {
			errs = append(errs, err)
		}
	}
	return transactionFailures, errors.Join(errs...)
}

// LastSync returns the last sync attempt.
func (d *Daemon) LastSync() SyncResult {
	last, _ := d.loop.results()
	return last
}
