// The configured clusters and their watchers, which start, stop and restart
// as the configuration changes.

package daemon

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/laststate"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// clusterSet is the configured clusters, each with its watchers.
type clusterSet struct {
	sink  cluster.Sink // where the watchers hand their objects
	store *model.Store // takes the clusters' settings and node lists
	log   *slog.Logger
	// queue asks for a sync when a routes cluster's nodes change
	// (reach.go).
	queue func()

	mu sync.Mutex
	// ctx is Run's: the watchers a reload starts end with it too.
	ctx     context.Context
	handles map[string]*clusterHandle
	// generation numbers the watchers started, so that the model knows
	// a restarted cluster's objects from its old ones.
	generation int
	// kept are the clusters' last known states, read at the start; the
	// first set serves them, before the watchers start (laststate.go).
	kept map[string]laststate.State
}

// clusterHandle is one configured cluster and its watcher.
type clusterHandle struct {
	cfg        config.Cluster
	source     string // what the watcher was built from: a change restarts it
	generation int
	watcher    *cluster.Watcher
	// nodes watches the cluster's Nodes when it is reached through them
	// (reach.go); nil for reach = "direct".
	nodes *cluster.NodeWatcher
	// order is the cluster's place in the configuration: the earlier
	// cluster wins a route that two want (routes.go).
	order int
}

func newClusterSet(sink cluster.Sink, store *model.Store, log *slog.Logger, queue func()) *clusterSet {
	return &clusterSet{sink: sink, store: store, log: log, queue: queue, handles: map[string]*clusterHandle{}}
}

// setClusters makes cfgs the configured clusters, once this host's network
// allows them.
func (d *Daemon) setClusters(cfgs []config.Cluster) error {
	// A service range or allowed external IP range that collides with this
	// host's network would let a cluster shadow real addresses: refused at
	// start and at reload, like check-config does.
	if err := checkHost(cfgs, d.host); err != nil {
		var c hostcheck.Collision
		if !errors.As(err, &c) {
			// Not a verdict: the kernel could not be read. check-config
			// reports it; the daemon serves on.
			d.log.Warn("could not check the clusters' service ranges and allow_external_ips against this host's network", "err", err)
		} else {
			return fmt.Errorf("a cluster's ranges collide with this host's network:\n%w", err)
		}
	}
	// Before the clusters' lock: resolving may take up to its timeout.
	return d.clusters.set(cfgs, d.apiserverAddrs(cfgs))
}

// source is what a watcher depends on: the cluster's settings and the
// kubeconfig's content (a rotated token must be picked up by a reload).
func source(c config.Cluster) string {
	data, _ := os.ReadFile(c.Kubeconfig)
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%s|%s|%s|%v|%q|%q|%q|%s|%q|%x", c.Kubeconfig, c.Context, c.Server, c.ServiceCIDRs, c.Namespaces, c.ExcludeNamespaces, c.ServiceSelector,
		c.Reach, c.NodeAddressTypes, sum)
}

// setContext gives the set Run's context, before the first set.
func (s *clusterSet) setContext(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = ctx
}

// set starts the watchers of new clusters, stops those of removed ones (the
// model drops their objects, and so their rules), restarts those whose
// source changed (their rules stay until they have synced again) and keeps
// the others running. On error nothing changed.
func (s *clusterSet) set(cfgs []config.Cluster, apiservers map[string][]netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Build every new watcher first: a bad kubeconfig refuses the whole
	// change before anything is stopped.
	next := map[string]*clusterHandle{}
	var started []*clusterHandle
	for _, c := range cfgs {
		src := source(c)
		if h := s.handles[c.Name]; h != nil && h.source == src {
			h.cfg = c
			next[c.Name] = h
			continue
		}
		w, err := cluster.New(c, s.sink, s.log)
		if err != nil {
			return err
		}
		nw, err := s.newNodeWatcher(c)
		if err != nil {
			return err
		}
		s.generation++
		h := &clusterHandle{cfg: c, source: src, generation: s.generation, watcher: w, nodes: nw}
		next[c.Name] = h
		started = append(started, h)
	}
	// Old watchers stop before the model forgets their objects, so that
	// none of their events lands in the new data.
	for name, h := range s.handles {
		if next[name] != h {
			h.stop()
		}
	}
	var ccs []model.ClusterConfig
	for i, c := range cfgs {
		h := next[c.Name]
		h.order = i
		ccs = append(ccs, model.ClusterConfig{Cluster: c, Generation: h.generation, APIServerAddrs: apiservers[c.Name]})
	}
	s.store.SetClusters(ccs)
	s.handles = next
	for _, h := range started {
		if st, ok := s.kept[h.cfg.Name]; ok {
			s.serveKept(h.cfg.Name, st) // laststate.go
		}
	}
	s.kept = nil
	for _, h := range started {
		if err := h.watcher.Start(s.ctx); err != nil {
			return fmt.Errorf("cluster %q: %w", h.cfg.Name, err)
		}
		if h.nodes != nil {
			if err := h.nodes.Start(s.ctx); err != nil {
				return fmt.Errorf("cluster %q: nodes: %w", h.cfg.Name, err)
			}
		}
	}
	return nil
}

// stop stops every watcher; the model keeps what they delivered.
func (s *clusterSet) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.handles {
		h.stop()
	}
}

func (h *clusterHandle) stop() {
	h.watcher.Stop()
	if h.nodes != nil {
		h.nodes.Stop()
	}
}

// each calls fn for every cluster, in no order, with the set locked: fn
// must not call back into the set.
func (s *clusterSet) each(fn func(h *clusterHandle)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.handles {
		fn(h)
	}
}

// clusterConfigs are the clusters configured now, in configuration order.
func (d *Daemon) clusterConfigs() []config.Cluster {
	var out []config.Cluster
	for _, h := range d.clusters.inOrder() {
		out = append(out, h.cfg)
	}
	return out
}

// inOrder returns copies of the handles in configuration order, which a
// reload cannot change under the caller.
func (s *clusterSet) inOrder() []clusterHandle {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]clusterHandle, 0, len(s.handles))
	for _, h := range slices.SortedFunc(maps.Values(s.handles), func(a, b *clusterHandle) int { return cmp.Compare(a.order, b.order) }) {
		out = append(out, *h)
	}
	return out
}
