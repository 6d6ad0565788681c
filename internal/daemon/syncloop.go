// The sync loop: one sync at a time, through the runner, and what each one
// tells systemd, the health checks and the metrics.

package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/health"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
	"github.com/kube-outpost/kube-outpost/internal/systemd"
)

// readyGrace is how long READY waits for clusters that cannot be reached:
// an unreachable apiserver must not keep the unit "activating" forever,
// while the others are served.
const readyGrace = 20 * time.Second

// maxUnprogrammed bounds the trigger times kept across failing syncs, like
// the store bounds those it collects.
const maxUnprogrammed = 10000

// SyncResult describes the last sync attempt.
type SyncResult struct {
	At       time.Time
	Duration time.Duration
	Full     bool
	Err      error
	Ports    int
}

// syncLoop takes the desired state from the store and has it programmed,
// one sync at a time.
type syncLoop struct {
	runner *syncrunner.Runner
	store  *model.Store
	// refresh hands the model what is read afresh at every sync, before
	// the desired state is taken (listeners.go).
	refresh func()
	// program makes the kernel match a desired state (daemon.go).
	program func(ctx context.Context, st *model.State, full bool) (transactionFailures int, err error)
	// onReady runs once, in the loop, after the sync that made the daemon
	// ready (daemon.go: the cleanup of a mode switched away from).
	onReady func(ctx context.Context)
	// succeeded is told of every successful sync (laststate.go); it
	// must not block.
	succeeded func()
	health    *health.Tracker
	metrics   *metrics.Metrics
	notifier  *systemd.Notifier
	log       *slog.Logger

	// Only the loop touches these.
	started      time.Time   // the daemon's start, from which readyGrace counts
	mustFull     bool        // the backends' next sync is full: the first one, and after a failure
	unprogrammed []time.Time // trigger times of changes a failed sync did not program
	ready        bool

	// repair: a probe found objects of ours gone (probe.go); the next
	// sync is full.
	repair atomic.Bool
	// edges counts the starts and ends of syncs, odd while one runs: a
	// probe that saw it change read the kernel while a sync wrote it, and
	// its verdict is no verdict (probe.go).
	edges atomic.Uint64

	mu          sync.Mutex
	lastSync    SyncResult
	lastSuccess SyncResult // zero before the first successful sync
	syncStarted time.Time  // zero when no sync runs
}

// run syncs until ctx is done; the first sync is at once.
func (l *syncLoop) run(ctx context.Context, started time.Time) {
	l.started = started
	go l.watchdog(ctx)
	go func() {
		// Re-evaluate readiness once the grace for unreachable clusters is
		// over, even if no change arrives.
		select {
		case <-ctx.Done():
		case <-time.After(readyGrace):
			l.runner.Trigger()
		}
	}()
	l.runner.Loop(ctx)
}

// askRepair asks for a full sync to put back what was removed; false when
// one is asked for already and has not started.
func (l *syncLoop) askRepair() bool {
	if !l.repair.CompareAndSwap(false, true) {
		return false
	}
	l.runner.Trigger()
	return true
}

// trigger asks for a sync; requests merge.
func (l *syncLoop) trigger() { l.runner.Trigger() }

// results returns the last sync attempt and the last successful one.
func (l *syncLoop) results() (last, success SyncResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastSync, l.lastSuccess
}

func (l *syncLoop) sync(ctx context.Context, run syncrunner.Run) error {
	if run.Periodic {
		// The full sync's turn is queued as a change is (queue), so that
		// full syncs that keep failing turn the health checks red.
		l.health.QueuedUpdate()
		l.metrics.Queued(time.Now())
	}
	l.health.SyncStarted()
	l.refresh()
	st, triggers := l.store.Checkout()
	triggers = append(l.unprogrammed, triggers...)
	l.unprogrammed = nil
	l.edges.Add(1)
	defer l.edges.Add(1)
	full := run.Periodic || l.repair.Swap(false)
	start := time.Now()
	l.mu.Lock()
	l.syncStarted = start
	l.mu.Unlock()
	transactionFailures, err := l.program(ctx, st, full)
	end := time.Now()
	res := SyncResult{At: start, Duration: end.Sub(start), Full: full, Err: err}
	for _, c := range st.Clusters {
		res.Ports += len(c.Ports)
	}
	l.mu.Lock()
	l.lastSync = res
	if res.Err == nil {
		l.lastSuccess = res
	}
	l.syncStarted = time.Time{}
	l.mu.Unlock()
	l.metrics.ObserveSync(metrics.Sync{
		Duration: res.Duration, End: end, Full: full || l.mustFull, Err: res.Err,
		TransactionFailures: transactionFailures, State: st, Triggers: triggers,
	})
	l.health.SyncDone(res.Err == nil)
	l.mustFull = res.Err != nil
	if res.Err != nil {
		// Measured when a later sync programs them.
		l.unprogrammed = triggers[:min(len(triggers), maxUnprogrammed)]
		l.notifier.Notify("STATUS=sync failing, previous rules in force: " + firstLine(res.Err.Error()))
		l.log.Error("sync failed; the previous rules stay in force and the sync is retried", "err", res.Err)
		return res.Err
	}
	l.log.Debug("synced", "full", full, "ports", res.Ports, "duration", res.Duration)
	l.notifyReady(ctx, st, res)
	if l.succeeded != nil {
		l.succeeded()
	}
	return nil
}

// notifyReady tells systemd the daemon is ready after the first successful
// sync in which every cluster has synced or serves its last known state,
// or, past readyGrace, in which every cluster that can be reached has.
func (l *syncLoop) notifyReady(ctx context.Context, st *model.State, res SyncResult) {
	var waiting, kept []string
	for _, c := range st.Clusters {
		switch {
		case c.Synced:
		case c.PortsKnown():
			kept = append(kept, c.Name)
		default:
			waiting = append(waiting, c.Name)
		}
	}
	status := fmt.Sprintf("STATUS=serving %d service ports of %d clusters; last sync %s", res.Ports, len(st.Clusters), res.Duration.Round(time.Millisecond))
	if len(kept) > 0 {
		status += "; serving the last known state of: " + strings.Join(kept, ", ")
	}
	if len(waiting) > 0 {
		status += "; not synced yet: " + strings.Join(waiting, ", ")
	}
	if !l.ready && (len(waiting) == 0 || time.Since(l.started) >= readyGrace) {
		l.ready = true
		// Before READY: what systemctl start waits for is then all done,
		// the other mode's rules gone included.
		if l.onReady != nil {
			l.onReady(ctx)
		}
		l.health.SetReady()
		l.log.Info("ready", "clusters_not_synced", waiting, "clusters_serving_last_known_state", kept)
		l.notifier.Notify("READY=1\n" + status)
		return
	}
	l.notifier.Notify(status)
}

// watchdog keeps systemd's watchdog fed while syncs complete; a sync stuck
// for longer than the watchdog period (a hung iptables-restore) lets systemd
// restart the daemon, which keeps the rules.
func (l *syncLoop) watchdog(ctx context.Context) {
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
			l.mu.Lock()
			stuck := !l.syncStarted.IsZero() && time.Since(l.syncStarted) > 2*every
			l.mu.Unlock()
			if !stuck {
				l.notifier.Notify("WATCHDOG=1")
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
