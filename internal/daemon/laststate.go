// The clusters' last known states (internal/laststate): read at the start
// and served until each cluster syncs, so that a host that boots while an
// apiserver is down serves that cluster as it last was; saved after syncs.

package daemon

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/laststate"
)

// lastKnownDir is where the states are, "" when none is kept.
func (d *Daemon) lastKnownDir() string {
	if d.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(d.cfg.StateDir, laststate.Subdir)
}

// newStateWriter is the writer of the states; nil when none is kept.
func (d *Daemon) newStateWriter() *laststate.Writer {
	dir := d.lastKnownDir()
	if dir == "" {
		return nil
	}
	return laststate.NewWriter(laststate.WriterOptions{Dir: dir, Source: d.store, Targets: d.stateTargets, Log: d.log})
}

// stateTargets are the configured clusters, for the writer.
func (d *Daemon) stateTargets() []laststate.Target {
	var out []laststate.Target
	for _, h := range d.clusters.inOrder() {
		out = append(out, laststate.Target{Identity: laststate.IdentityOf(h.cfg), Answering: h.watcher.Status().Connected})
	}
	return out
}

// runStateWriter saves the states until ctx is done; the function it
// returns waits for the last save, so that a stop leaves it on disk.
func (d *Daemon) runStateWriter(ctx context.Context) (wait func()) {
	if d.writer == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.writer.Run(ctx)
	}()
	return func() { <-done }
}

// syncSucceeded tells the writer a sync succeeded: what it programmed may be
// worth keeping.
func (d *Daemon) syncSucceeded() {
	if d.writer != nil {
		d.writer.Poke()
	}
}

// loadLastKnown reads the states of clusters that may be served: a file
// that cannot be is said in one line, and nothing of it is used.
func (d *Daemon) loadLastKnown(clusters []config.Cluster) map[string]laststate.State {
	dir := d.lastKnownDir()
	if dir == "" {
		return nil
	}
	if d.cfg.StaleStateMaxAge == 0 {
		d.log.Debug("stale_state_max_age is 0s: no cluster's last known state is served")
		return nil
	}
	now := time.Now()
	out := map[string]laststate.State{}
	for _, c := range clusters {
		st, err := laststate.Load(dir, laststate.IdentityOf(c), d.cfg.StaleStateMaxAge, now)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			d.log.Warn("not serving the cluster's last known state", "cluster", c.Name, "err", err)
		default:
			out[c.Name] = st
		}
	}
	return out
}

// serveKept hands a cluster's last known state to the model, before its
// watcher starts.
func (s *clusterSet) serveKept(name string, st laststate.State) {
	if err := s.store.ServeLastKnown(name, st.Objects, st.SavedAt); err != nil {
		s.log.Warn("not serving the cluster's last known state", "cluster", name, "err", err)
		return
	}
	s.log.Info("serving the cluster's last known state until it syncs", "cluster", name,
		"saved_at", st.SavedAt.Format(time.RFC3339), "age", time.Since(st.SavedAt).Round(time.Second),
		"services", len(st.Objects.Services))
}
