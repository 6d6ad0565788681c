package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// dnsBuckets: an answer comes from memory in microseconds, so the buckets
// start at 50 µs; those up to 100 ms catch a daemon starved of CPU.
var dnsBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1}

// dnsMetrics are the DNS server's ([dns]); registered only with it.
type dnsMetrics struct {
	queries  *prometheus.CounterVec
	duration prometheus.Histogram
	dropped  *prometheus.CounterVec
}

func newDNSMetrics() *dnsMetrics {
	return &dnsMetrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dns_queries_total",
			Help: "DNS queries answered, by the cluster whose zone or service range holds the name (empty outside them all: REFUSED) and the answer's rcode.",
		}, []string{"cluster", "rcode"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dns_query_duration_seconds",
			Help:    "From a DNS query's arrival to its answer written to the socket.",
			Buckets: dnsBuckets,
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dns_dropped_total",
			Help: "DNS queries dropped unanswered, by reason: overflow (the kernel dropped them, the server at its rate limit), rate (a TCP query waited too long for its turn), malformed (not a DNS query).",
		}, []string{"reason"}),
	}
}

// ObserveDNS counts a DNS query answered. cluster is a configured one or
// "", rcode one of a fixed set of names (names.Rcodes): the caller keeps
// the labels bounded, whatever the queries are. Without [dns] it does
// nothing.
func (m *Metrics) ObserveDNS(cluster, rcode string, took time.Duration) {
	if m.dns == nil {
		return
	}
	m.dns.queries.WithLabelValues(cluster, rcode).Inc()
	m.dns.duration.Observe(took.Seconds())
}

// ObserveDNSDropped counts n DNS queries dropped unanswered for reason,
// one of a fixed set (names.DropReasons). Without [dns] it does nothing.
func (m *Metrics) ObserveDNSDropped(reason string, n int) {
	if m.dns == nil {
		return
	}
	m.dns.dropped.WithLabelValues(reason).Add(float64(n))
}
