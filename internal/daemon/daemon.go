// Package daemon wires the parts together: config -> cluster watchers ->
// model -> kernel backends, with one sync loop in between.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/health"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/routes"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
	"github.com/kube-outpost/kube-outpost/internal/systemd"
)

// Daemon is one running kube-outpost.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	store    *model.Store
	backends []proxy.Backend
	runner   *syncrunner.Runner
	notifier *systemd.Notifier
	started  time.Time
	metrics  *metrics.Metrics
	health   *health.Tracker
	host     hostcheck.Source // this host's addresses and routes
	// lookupHost resolves apiserver host names (host.go); tests fake it.
	lookupHost func(ctx context.Context, host string) ([]netip.Addr, error)

	// Only the sync loop touches these.
	mustFull     bool        // the backends' next sync is full: the first one, and after a failure
	unprogrammed []time.Time // trigger times of changes a failed sync did not program
	// routes installs reach = "routes" routes (reach.go); nil when tests
	// give fake backends and no fake installer.
	routes        *routes.Installer
	routesUsed    bool // a routes cluster was configured in this run
	routesCleaned bool // the leftovers of an earlier run were removed

	clusters *clusterSet

	mu          sync.Mutex
	lastSync    SyncResult
	lastSuccess SyncResult // zero before the first successful sync
	syncStarted time.Time  // zero when no sync runs
	ready       bool
	routeState  map[string]routeState // by routes cluster, from the last route sync
}

// readyGrace is how long READY waits for clusters that cannot be reached:
// an unreachable apiserver must not keep the unit "activating" forever,
// while the others are served.
const readyGrace = 20 * time.Second

// SyncResult describes the last sync attempt.
type SyncResult struct {
	At       time.Time
	Duration time.Duration
	Full     bool
	Err      error
	Ports    int
}

// Version is reported in kube_outpost_build_info; set by main.
var Version = "dev"

// New builds a daemon for cfg. Backends are made from cfg.Mode unless given
// (tests pass fakes).
func New(cfg *config.Config, log *slog.Logger, backends ...proxy.Backend) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, notifier: systemd.NewNotifier(), mustFull: true, host: hostSource,
		lookupHost: lookupHost}
	// The periodic run is the full sync; a failed sync is retried within
	// SyncPeriod.
	d.runner = syncrunner.New(d.sync, syncrunner.Options{
		MinInterval: cfg.MinSyncPeriod, MaxInterval: cfg.FullSyncPeriod, MaxBackoff: cfg.SyncPeriod,
	})
	// kube-proxy's health timeout: a failed sync is retried within
	// SyncPeriod, so twice that is at least one retry that failed too.
	d.health = health.NewTracker(2*cfg.SyncPeriod, nil)
	d.metrics = metrics.New(metrics.Options{
		Version: Version, Mode: string(cfg.Mode), Log: log,
		Clusters: d.clusterStatuses,
		Refusals: func() []model.RefusalCount { return d.store.RefusalCounts() },
	})
	if len(backends) == 0 {
		var err error
		if backends, err = newBackends(cfg, log, d.queue); err != nil { // modes.go
			return nil, err
		}
		d.routes = routes.New(routes.Options{Kernel: routes.NewKernel(nil), Log: log})
	}
	d.backends = backends
	d.store = model.NewStore(log, d.queue)
	d.clusters = newClusterSet(d.store, d.store, log, d.queue)
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
	d.mu.Lock()
	d.started = time.Now()
	d.mu.Unlock()
	d.clusters.setContext(ctx)
	// Before the first service is built: an endpoint at this host's own
	// address must never be programmed, not even for a moment.
	d.refreshHostAddrs()
	if err := d.setClusters(d.cfg.Clusters); err != nil {
		return err
	}
	go d.watchHostAddrs(ctx)
	d.otherModeCleanup(ctx)
	go d.watchdog(ctx)
	go func() {
		// Re-evaluate readiness once the grace for unreachable clusters is
		// over, even if no change arrives.
		select {
		case <-ctx.Done():
		case <-time.After(readyGrace):
			d.runner.Trigger()
		}
	}()
	d.log.Info("kube-outpost running", "mode", d.cfg.Mode, "clusters", len(d.cfg.Clusters))
	d.runner.Loop(ctx)
	d.notifier.Notify("STOPPING=1")
	d.clusters.stop()
	d.log.Info("stopping; rules and routes stay in place")
	return nil
}

// Reload applies a new configuration's clusters: new ones start, removed
// ones stop (and their rules go), changed ones restart (their rules stay
// until they have synced again), unchanged ones keep running. Settings
// outside [[clusters]] need a restart. On error nothing changed.
func (d *Daemon) Reload(cfg *config.Config) error {
	if diff := globalDiff(d.cfg, cfg); diff != "" {
		d.log.Warn("reload: settings outside [[clusters]] need a restart; keeping the running ones", "changed", diff)
	}
	if err := d.setClusters(cfg.Clusters); err != nil {
		return err
	}
	d.log.Info("configuration reloaded", "clusters", len(cfg.Clusters))
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
	if a.MetricsAddress != b.MetricsAddress || a.HealthzAddress != b.HealthzAddress {
		diff = append(diff, "metrics and healthz addresses")
	}
	if a.LogFormat != b.LogFormat {
		diff = append(diff, "log_format")
	}
	if !slices.Equal(a.RoutedClients, b.RoutedClients) {
		diff = append(diff, "routed_clients")
	}
	return strings.Join(diff, ", ")
}

func (d *Daemon) sync(ctx context.Context, run syncrunner.Run) error {
	if run.Periodic {
		// The full sync's turn is queued as a change is (queue), so that
		// full syncs that keep failing turn the health checks red.
		d.health.QueuedUpdate()
		d.metrics.Queued(time.Now())
	}
	d.health.SyncStarted()
	d.refreshListeners() // listeners.go: node ports held by local processes
	st, triggers := d.store.Checkout()
	triggers = append(d.unprogrammed, triggers...)
	d.unprogrammed = nil
	full := run.Periodic
	start := time.Now()
	d.mu.Lock()
	d.syncStarted = start
	d.mu.Unlock()
	var errs []error
	transactionFailures := 0
	for _, b := range d.backends {
		if err := b.Sync(ctx, st, full); err != nil {
			errs = append(errs, err)
			var tf proxy.TransactionFailure
			if errors.As(err, &tf) {
				transactionFailures++
			}
		}
	}
	// After the backends: a route only makes pod IPs reachable, which
	// DNAT rules already pointing there need, and a failure here must not
	// hold back the rules of every other cluster.
	if err := d.syncRoutes(ctx); err != nil {
		errs = append(errs, err)
	}
	end := time.Now()
	res := SyncResult{At: start, Duration: end.Sub(start), Full: full, Err: errors.Join(errs...)}
	for _, c := range st.Clusters {
		res.Ports += len(c.Ports)
	}
	d.mu.Lock()
	d.lastSync = res
	if res.Err == nil {
		d.lastSuccess = res
	}
	d.syncStarted = time.Time{}
	d.mu.Unlock()
	d.metrics.ObserveSync(metrics.Sync{
		Duration: res.Duration, End: end, Full: full || d.mustFull, Err: res.Err,
		TransactionFailures: transactionFailures, State: st, Triggers: triggers,
	})
	d.health.SyncDone(res.Err == nil)
	d.mustFull = res.Err != nil
	if res.Err != nil {
		// Measured when a later sync programs them.
		d.unprogrammed = triggers[:min(len(triggers), maxUnprogrammed)]
		d.notifier.Notify("STATUS=sync failing, previous rules in force: " + firstLine(res.Err.Error()))
		d.log.Error("sync failed; the previous rules stay in force and the sync is retried", "err", res.Err)
		return res.Err
	}
	d.log.Debug("synced", "full", full, "ports", res.Ports, "duration", res.Duration)
	d.notifyReady(st, res)
	return nil
}

// notifyReady tells systemd the daemon is ready after the first successful
// sync in which every cluster has synced, or, past readyGrace, in which
// every cluster that can be reached has.
func (d *Daemon) notifyReady(st *model.State, res SyncResult) {
	var waiting []string
	for _, c := range st.Clusters {
		if !c.Synced {
			waiting = append(waiting, c.Name)
		}
	}
	status := fmt.Sprintf("STATUS=serving %d service ports of %d clusters; last sync %s", res.Ports, len(st.Clusters), res.Duration.Round(time.Millisecond))
	if len(waiting) > 0 {
		status += "; not synced yet: " + strings.Join(waiting, ", ")
	}
	d.mu.Lock()
	becameReady := !d.ready && (len(waiting) == 0 || time.Since(d.started) >= readyGrace)
	if becameReady {
		d.ready = true
	}
	d.mu.Unlock()
	if becameReady {
		d.health.SetReady()
		d.log.Info("ready", "clusters_not_synced", waiting)
		d.notifier.Notify("READY=1\n" + status)
		return
	}
	d.notifier.Notify(status)
}

// watchdog keeps systemd's watchdog fed while syncs complete; a sync stuck
// for longer than the watchdog period (a hung iptables-restore) lets systemd
// restart the daemon, which keeps the rules.
func (d *Daemon) watchdog(ctx context.Context) {
	every := systemd.WatchdogInterval()
	if every == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.mu.Lock()
			stuck := !d.syncStarted.IsZero() && time.Since(d.syncStarted) > 2*every
			d.mu.Unlock()
			if !stuck {
				d.notifier.Notify("WATCHDOG=1")
			}
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// LastSync returns the last sync attempt.
func (d *Daemon) LastSync() SyncResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastSync
}
