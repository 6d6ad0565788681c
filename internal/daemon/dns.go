package daemon

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/names"
	"github.com/kube-outpost/kube-outpost/internal/status"
	"github.com/kube-outpost/kube-outpost/internal/systemd"
)

// skippedShown is how many of the names left out the log and status
// give: a hostile apiserver may send any number.
const skippedShown = 5

// dnsServer is the component that answers the clusters' service names
// ([dns]): each sync gives it a new index of the state just programmed,
// so that a name resolves once its rules are in place, and the zones of
// the clusters now, which a reload may change.
type dnsServer struct {
	srv  *names.Server
	opts names.Options
	cfg  config.DNS
	// clusters are the clusters configured now.
	clusters func() []config.Cluster
	log      *slog.Logger
	// answered counts the queries by rcode for status, one counter per
	// name of names.Rcodes: made once, then only read, so
	// that a query takes no lock.
	answered map[string]*atomic.Uint64
	// dropped counts the queries dropped by reason, likewise.
	dropped map[string]*atomic.Uint64
	// mu guards last, the index whose names left out were last logged.
	mu   sync.Mutex
	last *names.Index
	// kept are the sockets systemd kept across a restart (its file
	// descriptor store), by names.SocketName; store keeps ours there.
	kept  map[string]*os.File
	store fdStore
	// held: the server took kept sockets and reads them only once the
	// first sync has given it the names (or after holdMax): the
	// queries sent during the restart wait, rather than being told
	// SERVFAIL by a server that knows no name yet.
	held      bool
	serveNow  chan struct{}
	serveOnce sync.Once
	// The index is built beside the sync loop, not in it: at 10,000
	// services × 10 endpoints a build takes 35 ms (BenchmarkBuild),
	// which every sync would add to the next change's latency. bmu
	// guards pending, the newest state not built yet, and the counts of
	// states given (given) and built or superseded (done).
	bmu         sync.Mutex
	bcond       *sync.Cond
	pending     *model.State
	given, done uint64
	wake        chan struct{}
	builderOnce sync.Once
}

// fdStore is systemd's file descriptor store (systemd.Notifier).
type fdStore interface {
	StoreFile(name string, f *os.File) error
	RemoveFiles(name string) error
}

// holdMax bounds how long queries kept across a restart wait for the
// first sync: a host's resolver gives up after about 5 s.
const holdMax = 3 * time.Second

func newDNSServer(cfg config.DNS, clusters func() []config.Cluster, m *metrics.Metrics, log *slog.Logger) *dnsServer {
	s := &dnsServer{cfg: cfg, clusters: clusters, log: log, answered: map[string]*atomic.Uint64{},
		dropped: map[string]*atomic.Uint64{}, last: &names.Index{}, serveNow: make(chan struct{}), wake: make(chan struct{}, 1)}
	s.bcond = sync.NewCond(&s.bmu)
	for _, rc := range names.Rcodes {
		s.answered[rc] = new(atomic.Uint64)
	}
	for _, r := range names.DropReasons {
		s.dropped[r] = new(atomic.Uint64)
	}
	s.opts = names.Options{Listen: cfg.Listen, TTL: cfg.TTL, MaxQPS: float64(cfg.MaxQPS), Log: log,
		Answered: func(cluster string, rcode int, took time.Duration) {
			rc := names.RcodeName(rcode)
			m.ObserveDNS(cluster, rc, took)
			// Last: once status counts a query, so do the metrics.
			s.answered[rc].Add(1)
		},
		Dropped: func(reason string, n int) {
			m.ObserveDNSDropped(reason, n)
			s.dropped[reason].Add(uint64(n))
		}}
	s.srv = names.New(s.opts)
	return s
}

// keep gives the server the sockets systemd kept across a restart, and
// the store to keep its own in for the next one. Before Start.
func (s *dnsServer) keep(kept map[string]*os.File, store fdStore) {
	s.kept, s.store = kept, store
	s.opts.Inherited = kept
	s.srv = names.New(s.opts)
}

// Start serves at once, before the first sync: until a cluster's
// services are known its names fail, to be asked again, rather than
// being refused or said not to exist.
//
// Sockets kept across a restart are taken, not bound anew, and read only
// after the first sync; every socket is kept in systemd's store for the
// next restart, one that is not used any more (dns.listen changed) is
// dropped from it.
func (s *dnsServer) Start(ctx context.Context) error {
	s.builderOnce.Do(func() { go s.builder(ctx) })
	if err := s.Sync(ctx, &model.State{}); err != nil {
		return err
	}
	if err := s.srv.Bind(ctx); err != nil {
		return err
	}
	if s.store != nil {
		s.storeSockets()
	}
	if !s.held {
		s.srv.Serve()
		return nil
	}
	s.log.Info("dns: serving the sockets kept across the restart once the first sync has given the names", "at_most", holdMax)
	go func() {
		select {
		case <-s.serveNow:
		case <-time.After(holdMax):
		case <-ctx.Done():
			return
		}
		s.srv.Serve()
	}()
	return nil
}

func (s *dnsServer) storeSockets() {
	files, err := s.srv.Files()
	if err != nil {
		s.log.Warn("dns: cannot keep the sockets for a restart", "err", err)
		return
	}
	for name, f := range files {
		if _, ok := s.kept[name]; ok {
			// Passed back by systemd: still in its store.
			s.held = true
		} else if err := s.store.StoreFile(name, f); err != nil {
			s.log.Warn("dns: cannot keep a socket for a restart", "socket", name, "err", err)
		}
		f.Close()
	}
	for name := range s.kept {
		if _, ok := files[name]; !ok {
			s.store.RemoveFiles(name)
		}
	}
}

// Sync hands the state to the builder and returns: the names follow
// within a build's time, and the sync loop does not wait for it. A
// snapshot is the sync's own copy, so it may be read after the sync.
func (s *dnsServer) Sync(_ context.Context, st *model.State) error {
	s.bmu.Lock()
	s.pending = st
	s.given++
	s.bmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // the builder is woken already, and takes the newest
	}
	return nil
}

// builder builds the index of the newest state given, one at a time;
// states given during a build are superseded by the last of them.
func (s *dnsServer) builder(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.bmu.Lock()
		st, upTo := s.pending, s.given
		s.pending = nil
		s.bmu.Unlock()
		if st != nil {
			ix := names.Build(st, names.ZonesOf(s.clusters()))
			s.srv.Set(ix)
			s.logSkipped(ix)
			if len(st.Clusters) > 0 {
				s.serveOnce.Do(func() { close(s.serveNow) })
			}
		}
		s.bmu.Lock()
		s.done = max(s.done, upTo)
		s.bcond.Broadcast()
		s.bmu.Unlock()
	}
}

// logSkipped logs the names left out when they change, not at every
// sync: a bad name stays until its service changes.
func (s *dnsServer) logSkipped(ix *names.Index) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ix.SameSkipped(s.last) {
		return
	}
	s.last = ix
	n, first := ix.Skipped(skippedShown)
	if n == 0 {
		s.log.Info("dns: every service name is a valid DNS name again")
		return
	}
	s.log.Warn("dns: service ports whose names cannot be DNS names are left out", "count", n, "first", first)
}

// status is the server's part of `kube-outpost status`.
func (s *dnsServer) status() *status.DNS {
	ix := s.srv.Index()
	d := &status.DNS{Names: ix.Names(), Zones: []status.DNSZones{}, Queries: []status.RcodeCount{}}
	for _, a := range s.cfg.Listen {
		d.Listen = append(d.Listen, a.String())
	}
	for _, c := range s.clusters() {
		d.Zones = append(d.Zones, status.DNSZones{Cluster: c.Name, Zones: names.ZonesOf([]config.Cluster{c})[c.Name],
			Reverse: names.ReverseZonesOf(c)})
	}
	for _, rc := range names.Rcodes {
		if n := s.answered[rc].Load(); n > 0 {
			d.Queries = append(d.Queries, status.RcodeCount{Rcode: rc, Count: n})
		}
	}
	for _, r := range names.DropReasons {
		if n := s.dropped[r].Load(); n > 0 {
			d.Dropped = append(d.Dropped, status.DropCount{Reason: r, Count: n})
		}
	}
	d.Skipped, d.SkippedFirst = ix.Skipped(skippedShown)
	return d
}

func (s *dnsServer) Stop() { s.srv.Stop() }

// keptSockets hands the DNS server the sockets systemd kept across a
// restart (dns.go), and drops from systemd's store those no server takes
// any more: without [dns] now, they would hold its port.
func (d *Daemon) keptSockets() {
	kept := map[string]*os.File{}
	for name, files := range systemd.ListenFiles() {
		if d.dns != nil && strings.HasPrefix(name, "dns-") && len(files) == 1 {
			kept[name] = files[0]
			continue
		}
		for _, f := range files {
			f.Close()
		}
		d.notifier.RemoveFiles(name)
	}
	if d.dns != nil {
		d.dns.keep(kept, d.notifier)
	}
}
