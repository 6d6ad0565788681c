package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// ConnectionCounts reads each service port's new connections from the
// kernel, at a scrape (service_metrics).
type ConnectionCounts func(ctx context.Context) (map[model.PortKey]uint64, error)

// connectionsCollector exports kube_outpost_service_connections_total.
// It reads the kernel at each scrape rather than keeping counts of its
// own: the kernel's counter is the truth, and survives daemon restarts.
type connectionsCollector struct {
	read ConnectionCounts
	desc *prometheus.Desc
	log  interface{ Warn(string, ...any) }
}

// scrapeReadTimeout bounds the kernel read of one scrape.
const scrapeReadTimeout = 5 * time.Second

const connectionsHelp = "New connections to the service port (its ClusterIP, external IPs and node port) that this host's rules sent to an endpoint, as the kernel counts them; both IP families of a dual-stack port added up. Only with service_metrics = true, in a mode that counts (nftables)."

func newConnectionsCollector(o Options) *connectionsCollector {
	return &connectionsCollector{read: o.ServiceConnections, log: o.Log,
		desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "service_connections_total"),
			connectionsHelp, []string{"cluster", "namespace", "service", "port"}, nil)}
}

func (c *connectionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *connectionsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeReadTimeout)
	defer cancel()
	counts, err := c.read(ctx)
	if err != nil {
		c.log.Warn("could not read the service connection counters", "err", err)
	}
	// A dual-stack port is two keys with one set of labels.
	sums := map[[4]string]uint64{}
	for k, n := range counts {
		sums[[4]string{k.Cluster, k.Namespace, k.Name, k.Port}] += n
	}
	for l, n := range sums {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), l[0], l[1], l[2], l[3])
	}
}
