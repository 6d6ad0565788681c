package daemon

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/names"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// skippedShown is how many of the names left out the log and status
// give: a hostile apiserver may send any number.
const skippedShown = 5

// dnsServer is the component that answers the clusters' service names
// ([dns]): each sync gives it a new index of the state just programmed,
// so that a name resolves once its rules are in place, and the zones of
// the clusters now, which a reload may change.
type dnsServer struct {
	srv *names.Server
	cfg config.DNS
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
}

func newDNSServer(cfg config.DNS, clusters func() []config.Cluster, m *metrics.Metrics, log *slog.Logger) *dnsServer {
	s := &dnsServer{cfg: cfg, clusters: clusters, log: log, answered: map[string]*atomic.Uint64{},
		dropped: map[string]*atomic.Uint64{}, last: &names.Index{}}
	for _, rc := range names.Rcodes {
		s.answered[rc] = new(atomic.Uint64)
	}
	for _, r := range names.DropReasons {
		s.dropped[r] = new(atomic.Uint64)
	}
	s.srv = names.New(names.Options{Listen: cfg.Listen, TTL: cfg.TTL, Log: log,
		Answered: func(cluster string, rcode int, took time.Duration) {
			rc := names.RcodeName(rcode)
			m.ObserveDNS(cluster, rc, took)
			// Last: once status counts a query, so do the metrics.
			s.answered[rc].Add(1)
		},
		Dropped: func(reason string, n int) {
			m.ObserveDNSDropped(reason, n)
			s.dropped[reason].Add(uint64(n))
		}})
	return s
}

// Start serves at once, before the first sync: until a cluster's
// services are known its names fail, to be asked again, rather than
// being refused or said not to exist.
func (s *dnsServer) Start(ctx context.Context) error {
	if err := s.Sync(ctx, &model.State{}); err != nil {
		return err
	}
	return s.srv.Start(ctx)
}

func (s *dnsServer) Sync(_ context.Context, st *model.State) error {
	ix := names.Build(st, names.ZonesOf(s.clusters()))
	s.srv.Set(ix)
	s.logSkipped(ix)
	return nil
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
