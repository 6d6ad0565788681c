package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// NoBackendCount reads the kernel's count of translations that found a
// service and no backend, at a scrape; ok is false in a mode that keeps
// no such count, which then exports no series.
type NoBackendCount func(ctx context.Context) (n uint64, ok bool, err error)

const noBackendHelp = "Connections and datagrams to a service port that the kernel refused because the port had no endpoint (ebpf mode: connect() and sendmsg() failed with ECONNREFUSED), as the kernel counts them since its maps were made; they survive daemon restarts. Only in a mode that counts them (ebpf)."

// noBackendCollector exports kube_outpost_no_backend_total, read from the
// kernel at each scrape like the connection counts: the kernel's per-CPU
// counter is the truth.
type noBackendCollector struct {
	read NoBackendCount
	desc *prometheus.Desc
	log  interface{ Warn(string, ...any) }
}

func newNoBackendCollector(o Options) *noBackendCollector {
	return &noBackendCollector{read: o.NoBackend, log: o.Log,
		desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "no_backend_total"), noBackendHelp, nil, nil)}
}

func (c *noBackendCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *noBackendCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeReadTimeout)
	defer cancel()
	n, ok, err := c.read(ctx)
	if err != nil {
		// No series rather than a wrong one: a counter that drops to 0
		// reads as a reset.
		c.log.Warn("could not read the no-backend counter", "err", err)
		return
	}
	if ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n))
	}
}
