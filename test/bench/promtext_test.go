package bench

import (
	"testing"
	"time"
)

func TestMetricSum(t *testing.T) {
	scrape := `# HELP apiserver_watch_events_sizes Watch event size distribution in bytes
# TYPE apiserver_watch_events_sizes histogram
apiserver_watch_events_sizes_bucket{group="discovery.k8s.io",resource="endpointslices",version="v1",le="1024"} 3
apiserver_watch_events_sizes_sum{group="discovery.k8s.io",resource="endpointslices",version="v1"} 2500.5
apiserver_watch_events_sizes_sum{group="",resource="services",version="v1"} 100
apiserver_watch_events_sizes_sum_other{resource="endpointslices"} 7
apiserver_request_total{code="200",resource="endpointslices",verb="LIST"} 2
apiserver_request_total{code="200",resource="endpointslices",verb="WATCH"} 5
apiserver_request_total{code="200",resource="services",verb="LIST"} 1
apiserver_request_total{code="200",subresource="endpointslices",verb="LIST"} 40
kubernetes_feature_enabled{name="WatchList",stage="BETA"} 1
go_goroutines 42
`
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"apiserver_watch_events_sizes_sum", []string{`resource="endpointslices"`}, 2500.5},
		{"apiserver_watch_events_sizes_sum", nil, 2600.5},
		{"apiserver_request_total", []string{`verb="LIST"`, `resource="endpointslices"`}, 2},
		{"apiserver_request_total", []string{`verb="LIST"`}, 43},
		{"kubernetes_feature_enabled", []string{`name="WatchList"`}, 1},
		{"go_goroutines", nil, 42},
		{"go_gorout", nil, 0},
	} {
		if got := metricSum(scrape, c.name, c.labels...); got != c.want {
			t.Errorf("metricSum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestProgrammingMean(t *testing.T) {
	a := []byte("kube_outpost_network_programming_duration_seconds_sum 0.5\nkube_outpost_network_programming_duration_seconds_count 10\n")
	b := []byte("kube_outpost_network_programming_duration_seconds_sum 0.62\nkube_outpost_network_programming_duration_seconds_count 14\n")
	if got, want := programmingMean(a, b), 30*time.Millisecond; got < want-time.Microsecond || got > want+time.Microsecond {
		t.Errorf("programmingMean = %v, want %v", got, want)
	}
	if got := programmingMean(b, b); got != 0 {
		t.Errorf("no observation between the scrapes: %v, want 0", got)
	}
	if got := programmingMean(nil, b); got != 0 {
		t.Errorf("a scrape missing: %v, want 0", got)
	}
}
