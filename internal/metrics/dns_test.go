package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDNSQueries(t *testing.T) {
	m := New(Options{Version: "1", Mode: "iptables", DNS: true})
	m.ObserveDNS("prod", "NOERROR", 30*time.Microsecond)
	m.ObserveDNS("prod", "NOERROR", 200*time.Microsecond)
	m.ObserveDNS("prod", "NXDOMAIN", 2*time.Millisecond)
	m.ObserveDNS("", "REFUSED", 40*time.Microsecond)
	m.ObserveDNSDropped("overflow", 120)
	m.ObserveDNSDropped("overflow", 3)
	m.ObserveDNSDropped("malformed", 1)
	compare(t, m, `
# HELP kube_outpost_dns_dropped_total DNS queries dropped unanswered, by reason: overflow (the kernel dropped them, the server at its rate limit), rate (a TCP query waited too long for its turn), malformed (not a DNS query).
# TYPE kube_outpost_dns_dropped_total counter
kube_outpost_dns_dropped_total{reason="malformed"} 1
kube_outpost_dns_dropped_total{reason="overflow"} 123
# HELP kube_outpost_dns_queries_total DNS queries answered, by the cluster whose zone or service range holds the name (empty outside them all: REFUSED) and the answer's rcode.
# TYPE kube_outpost_dns_queries_total counter
kube_outpost_dns_queries_total{cluster="",rcode="REFUSED"} 1
kube_outpost_dns_queries_total{cluster="prod",rcode="NOERROR"} 2
kube_outpost_dns_queries_total{cluster="prod",rcode="NXDOMAIN"} 1
# HELP kube_outpost_dns_query_duration_seconds From a DNS query's arrival to its answer written to the socket.
# TYPE kube_outpost_dns_query_duration_seconds histogram
kube_outpost_dns_query_duration_seconds_bucket{le="5e-05"} 2
kube_outpost_dns_query_duration_seconds_bucket{le="0.0001"} 2
kube_outpost_dns_query_duration_seconds_bucket{le="0.00025"} 3
kube_outpost_dns_query_duration_seconds_bucket{le="0.0005"} 3
kube_outpost_dns_query_duration_seconds_bucket{le="0.001"} 3
kube_outpost_dns_query_duration_seconds_bucket{le="0.0025"} 4
kube_outpost_dns_query_duration_seconds_bucket{le="0.005"} 4
kube_outpost_dns_query_duration_seconds_bucket{le="0.01"} 4
kube_outpost_dns_query_duration_seconds_bucket{le="0.025"} 4
kube_outpost_dns_query_duration_seconds_bucket{le="0.1"} 4
kube_outpost_dns_query_duration_seconds_bucket{le="+Inf"} 4
kube_outpost_dns_query_duration_seconds_sum 0.0022700000000000003
kube_outpost_dns_query_duration_seconds_count 4
`, "kube_outpost_dns_dropped_total", "kube_outpost_dns_queries_total", "kube_outpost_dns_query_duration_seconds")
	if problems, err := testutil.GatherAndLint(m.Gatherer(), "kube_outpost_dns_queries_total", "kube_outpost_dns_query_duration_seconds", "kube_outpost_dns_dropped_total"); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// Without [dns] there are no DNS series, not even an empty histogram.
func TestNoDNSMetricsWithoutDNS(t *testing.T) {
	m := New(Options{Version: "1", Mode: "iptables"})
	m.ObserveDNS("prod", "NOERROR", time.Millisecond)
	m.ObserveDNSDropped("overflow", 1)
	if n, err := testutil.GatherAndCount(m.Gatherer(), "kube_outpost_dns_queries_total", "kube_outpost_dns_query_duration_seconds", "kube_outpost_dns_dropped_total"); err != nil || n != 0 {
		t.Errorf("%d DNS series without [dns] (%v)", n, err)
	}
}
