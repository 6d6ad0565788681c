// Package daemon wires the parts together: config -> cluster watchers ->
// model -> kernel backends, with one sync loop in between.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/runner"
)

// Daemon is one running kube-outpost.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	store    *model.Store
	backends []proxy.Backend
	runner   *runner.Runner
	fullDue  atomic.Bool

	mu       sync.Mutex
	watchers map[string]*cluster.Watcher
	lastSync SyncResult
}

// SyncResult describes the last sync attempt.
type SyncResult struct {
	At       time.Time
	Duration time.Duration
	Full     bool
	Err      error
	Ports    int
}

// New builds a daemon for cfg. Backends are made from cfg.Mode unless given
// (tests pass fakes).
func New(cfg *config.Config, log *slog.Logger, backends ...proxy.Backend) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, watchers: map[string]*cluster.Watcher{}}
	if len(backends) == 0 {
		var err error
		if backends, err = newBackends(cfg, log); err != nil {
			return nil, err
		}
	}
	d.backends = backends
	d.runner = runner.New(d.sync, cfg.MinSyncPeriod, cfg.SyncPeriod, nil)
	d.store = model.NewStore(log, d.runner.Trigger)
	for _, c := range cfg.Clusters {
		w, err := cluster.New(c, d.store, log)
		if err != nil {
			return nil, err
		}
		d.watchers[c.Name] = w
	}
	return d, nil
}

// ModeNotSupportedError says a configured mode cannot run on this host.
type ModeNotSupportedError struct {
	Mode config.Mode
	Err  error
}

func (e *ModeNotSupportedError) Error() string {
	return fmt.Sprintf("mode %q is not supported on this host: %v", e.Mode, e.Err)
}

func (e *ModeNotSupportedError) Unwrap() error { return e.Err }

func newBackends(cfg *config.Config, log *slog.Logger) ([]proxy.Backend, error) {
	if cfg.Mode != config.ModeIPTables {
		return nil, &ModeNotSupportedError{Mode: cfg.Mode, Err: errors.New("only iptables is implemented in this version")}
	}
	mark := uint32(0)
	if cfg.Masquerade {
		mark = cfg.MasqueradeMark
	}
	ct, err := iptables.NewConntrack()
	if err != nil {
		log.Warn("UDP flows to removed endpoints will not be forgotten until they time out", "err", err)
		ct = nil
	}
	var out []proxy.Backend
	for _, v6 := range []bool{false, true} {
		if !wantsFamily(cfg, v6) {
			continue
		}
		r, err := iptables.NewRunner(v6)
		if err != nil {
			return nil, &ModeNotSupportedError{Mode: cfg.Mode, Err: err}
		}
		out = append(out, iptables.New(iptables.Options{Runner: r, IPv6: v6, MasqueradeMark: mark, Conntrack: ct, Log: log}))
	}
	return out, nil
}

// wantsFamily: a family gets a backend only when some cluster has service
// CIDRs in it, so an IPv4-only setup never needs ip6tables.
func wantsFamily(cfg *config.Config, v6 bool) bool {
	for _, c := range cfg.Clusters {
		for _, p := range c.ServiceCIDRs {
			if p.Addr().Is6() == v6 {
				return true
			}
		}
	}
	return false
}

// Run watches the clusters and keeps the kernel in line until ctx is done.
// It leaves the rules in place when it returns: a restart must not cut
// traffic.
func (d *Daemon) Run(ctx context.Context) error {
	var ccs []model.ClusterConfig
	for _, c := range d.cfg.Clusters {
		ccs = append(ccs, model.ClusterConfig{Name: c.Name, ServiceCIDRs: c.ServiceCIDRs})
	}
	d.store.SetClusters(ccs)
	for name, w := range d.watchers {
		if err := w.Run(ctx); err != nil {
			return fmt.Errorf("cluster %q: %w", name, err)
		}
	}
	go d.fullSyncTicker(ctx)
	d.log.Info("kube-outpost running", "mode", d.cfg.Mode, "clusters", len(d.cfg.Clusters))
	d.runner.Loop(ctx)
	d.log.Info("stopping; rules stay in place")
	return nil
}

func (d *Daemon) fullSyncTicker(ctx context.Context) {
	t := time.NewTicker(d.cfg.FullSyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.fullDue.Store(true)
			d.runner.Trigger()
		}
	}
}

func (d *Daemon) sync(ctx context.Context) error {
	st := d.store.Snapshot()
	full := d.fullDue.Swap(false)
	start := time.Now()
	var errs *multierror.Error
	for _, b := range d.backends {
		if err := b.Sync(ctx, st, full); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	res := SyncResult{At: start, Duration: time.Since(start), Full: full, Err: errs.ErrorOrNil()}
	for _, c := range st.Clusters {
		res.Ports += len(c.Ports)
	}
	d.mu.Lock()
	d.lastSync = res
	d.mu.Unlock()
	if res.Err != nil {
		d.log.Error("sync failed; the previous rules stay in force and the sync is retried", "err", res.Err)
		return res.Err
	}
	d.log.Debug("synced", "full", full, "ports", res.Ports, "duration", res.Duration)
	return nil
}

// LastSync returns the last sync attempt.
func (d *Daemon) LastSync() SyncResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastSync
}

// Cleanup removes everything any kube-outpost mode ever programmed on this
// host. Modes whose tools are missing had nothing programmed.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	var errs *multierror.Error
	for _, v6 := range []bool{false, true} {
		bin := "iptables-save"
		if v6 {
			bin = "ip6tables-save"
		}
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		r, err := iptables.NewRunner(v6)
		if err != nil {
			if v6 {
				continue // no IPv6 netfilter in this kernel: nothing of ours there
			}
			errs = multierror.Append(errs, err)
			continue
		}
		if err := iptables.New(iptables.Options{Runner: r, IPv6: v6, Log: log}).Cleanup(ctx); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	return errs.ErrorOrNil()
}
