package daemon

import (
	"context"
	"log/slog"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/names"
)

// dnsServer is the component that answers the clusters' service names
// ([dns]): each sync gives it a new index of the state just programmed,
// so that a name resolves once its rules are in place, and the zones of
// the clusters now, which a reload may change.
type dnsServer struct {
	srv      *names.Server
	clusters *clusterSet
}

func newDNSServer(cfg config.DNS, clusters *clusterSet, log *slog.Logger) *dnsServer {
	return &dnsServer{srv: names.New(names.Options{Listen: cfg.Listen, TTL: cfg.TTL, Log: log}), clusters: clusters}
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
	zones := names.Zones{}
	s.clusters.each(func(h *clusterHandle) {
		zones[h.cfg.Name] = append(zones[h.cfg.Name], h.cfg.DNSZone)
		if h.cfg.DNSDefault {
			zones[h.cfg.Name] = append(zones[h.cfg.Name], config.ClusterLocal)
		}
	})
	s.srv.Set(names.Build(st, zones))
	return nil
}

func (s *dnsServer) Stop() { s.srv.Stop() }
