// The daemon's side of `kube-outpost status` and `kube-outpost explain`:
// the status socket and what it answers from.

package daemon

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// statusSource answers `kube-outpost status` and `kube-outpost explain` on
// the status socket. It reads what the daemon holds in memory, and the
// kernel for explain; it never asks an apiserver, so that it answers while
// one is down.
type statusSource struct {
	d *Daemon
	// explainer is how explain reads the kernel: the configured mode's,
	// made at the first explain. Tests replace it.
	explainer func() (proxy.Explainer, error)
}

var _ status.Source = (*statusSource)(nil)

func newStatusSource(d *Daemon) *statusSource {
	var (
		mu      sync.Mutex
		made    proxy.Explainer
		madeFor []bool
	)
	return &statusSource{d: d, explainer: func() (proxy.Explainer, error) {
		if d.mode == nil {
			return nil, &proxy.NotSupportedError{Mode: d.cfg.Mode, Err: errors.New("not in this build")}
		}
		// The clusters now, not those of the start: a reload may have
		// added an IP family, whose rules explain must read too.
		cfg := *d.cfg
		cfg.Clusters = d.clusterConfigs()
		families := proxy.Families(&cfg)
		mu.Lock()
		defer mu.Unlock()
		if made == nil || !slices.Equal(madeFor, families) {
			made, madeFor = d.mode.Explainer(&cfg, d.log), families
		}
		return made, nil
	}}
}

// Status reports, per cluster: from the watcher, whether the apiserver
// answers (Connected) and its last error; from the model, whether the
// cluster synced, what it programs and what it refuses; from the sync loop,
// the last sync and the last successful one.
func (s *statusSource) Status() status.Report {
	d := s.d
	// Store first, daemon lock second: the store never takes d.mu, so
	// this order cannot deadlock with a sync in progress.
	st := d.store.Snapshot()
	refusals := d.store.Refusals()
	last, success := d.loop.results()
	d.mu.Lock()
	r := status.Report{
		Mode: d.modeName(), ModeChoice: d.modeWhy, Version: Version, StartedAt: d.started,
		LastSync: syncStatus(last), LastSuccess: syncStatus(success),
	}
	d.mu.Unlock()
	for _, b := range d.backendList() {
		if w, ok := b.(proxy.Warner); ok {
			r.Warnings = append(r.Warnings, w.Warnings()...)
		}
	}
	s.addDatapath(&r)
	watch := map[string]cluster.Status{}
	servers := map[string]string{}
	reach := map[string]reachStatus{}
	d.clusters.each(func(h *clusterHandle) {
		name := h.cfg.Name
		watch[name] = h.watcher.Status()
		servers[name] = h.cfg.Server
		reach[name] = d.reachStatus(h)
	})
	for _, c := range st.Clusters {
		cs := status.ClusterFromModel(c, refusals)
		w := watch[c.Name]
		cs.Server = servers[c.Name]
		cs.Reachable = w.Connected
		cs.LastError, cs.LastErrorAt = w.LastError, w.LastErrorAt
		cs.UnreachableSince, cs.LastHeard = w.DownSince, w.LastHeard
		rs := reach[c.Name]
		cs.Reach, cs.NodeAddressTypes, cs.Nodes, cs.Routes = rs.reach, rs.types, rs.nodes, rs.routes
		if d.writer != nil {
			saved := d.writer.Saved(c.Name)
			cs.StateSavedAt = saved.At
			if saved.Err != nil {
				cs.StateSaveError = saved.Err.Error()
			}
		}
		r.Clusters = append(r.Clusters, cs)
	}
	s.addConnections(&r)
	if d.dns != nil {
		r.DNS = d.dns.status()
		if d.resolved.wanted {
			r.DNS.Resolved = d.resolved.status()
		}
	}
	return r
}

// connectionsTimeout bounds the kernel read for status: an answer without
// counts is better than none.
const connectionsTimeout = 2 * time.Second

// addConnections puts the kernel's connection counts in r, in a mode that
// keeps them.
func (s *statusSource) addConnections(r *status.Report) {
	if !slices.ContainsFunc(s.d.backendList(), func(b proxy.Backend) bool {
		_, ok := b.(proxy.ConnectionCounter)
		return ok
	}) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectionsTimeout)
	defer cancel()
	counts, err := s.d.connectionCounts(ctx)
	if err != nil {
		r.Warnings = append(r.Warnings, "connection counts not read: "+err.Error())
		return
	}
	r.AddConnections(counts)
}

// addDatapath puts in r the kernel objects of a mode that lists them
// (proxy.Inspector): they are all of its rules there are to show.
func (s *statusSource) addDatapath(r *status.Report) {
	for _, b := range s.d.backendList() {
		in, ok := b.(proxy.Inspector)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), connectionsTimeout)
		dp, err := in.Datapath(ctx)
		cancel()
		if err != nil {
			r.Warnings = append(r.Warnings, "datapath not read: "+err.Error())
			continue
		}
		if r.Datapath == nil {
			r.Datapath = &proxy.Datapath{}
		}
		r.Datapath.Programs = append(r.Datapath.Programs, dp.Programs...)
		r.Datapath.Maps = append(r.Datapath.Maps, dp.Maps...)
	}
}

func syncStatus(r SyncResult) status.Sync {
	s := status.Sync{At: r.At, Duration: status.Duration(r.Duration), Full: r.Full}
	if r.Err != nil {
		s.Error = r.Err.Error()
	}
	return s
}

// Explain puts the model's desired state for q next to the kernel's.
func (s *statusSource) Explain(ctx context.Context, q status.Query) (status.Explanation, error) {
	ex, err := s.explainer()
	if err != nil {
		return status.Explanation{}, err
	}
	return status.BuildExplanation(ctx, s.d.store.Snapshot(), s.d.store.Refusals(), q, s.d.modeName(), ex)
}

// listenStatus makes the status socket, nil when it is turned off. A
// socket another daemon answers on stops the start: two daemons would
// fight over the same rules.
func (d *Daemon) listenStatus() (*status.Listener, error) {
	if d.cfg.StatusSocket == "" {
		return nil, nil
	}
	return status.Listen(d.cfg.StatusSocket)
}

// serveStatus answers on the socket until ctx is done or stop is called;
// stop returns once the socket is gone, so that a daemon that exits leaves
// none behind. A failure while serving is logged, not fatal: the datapath
// matters more than its observers.
func (d *Daemon) serveStatus(ctx context.Context, l *status.Listener) (stop func()) {
	if l == nil {
		return func() {}
	}
	d.log.Info("serving status", "socket", d.cfg.StatusSocket)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	src := newStatusSource(d)
	go func() {
		defer close(done)
		if err := l.Serve(ctx, src); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("stopped serving status", "socket", d.cfg.StatusSocket, "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
