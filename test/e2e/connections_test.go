//go:build e2e

package e2e

import (
	"fmt"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// TestConnectionCounts: in a mode that counts each service port's new
// connections in the kernel, every connection made through this host is
// counted once, and the count is what `kube-outpost status` shows (the
// cluster's total and its busiest ports) and, with service_metrics, what
// kube_outpost_service_connections_total exports.
func TestConnectionCounts(t *testing.T) {
	needs(t, config.CanCountConnections)
	o := startObserved(t, "service_metrics = true")
	alpha := theLab.Cluster("alpha").Admin
	ns := namespace(t, alpha, "conns")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
	answeredBy(t, url(vip, 80), 1, "a1")

	port := ns + "/web:http"
	series := fmt.Sprintf(`cluster="alpha",namespace=%q,port="http",service="web"`, ns)
	counts := func() (total, busiest uint64, metric float64, err error) {
		rep := statusJSON(t, o.sock)
		for _, c := range rep.Clusters {
			if c.Name != "alpha" {
				continue
			}
			if c.Connections == nil {
				return 0, 0, 0, fmt.Errorf("status of alpha has no connection count: %+v", c)
			}
			total = *c.Connections
			for _, p := range c.Busiest {
				if p.Port == port {
					busiest = p.Connections
				}
			}
		}
		s, err := o.scrape()
		return total, busiest, s.value("kube_outpost_service_connections_total", series), err
	}
	total0, port0, metric0, err := counts()
	if err != nil {
		t.Fatal(err)
	}
	if port0 == 0 || metric0 != float64(port0) {
		t.Fatalf("after the first answers: %s in status %d, in the metric %v; want the same, not 0", port, port0, metric0)
	}

	const n = 25
	for range n {
		if body, err := get(url(vip, 80)); err != nil || body != "a1" {
			t.Fatalf("%s answered %q, %v", vip, body, err)
		}
	}
	// Counted in the kernel as each connection is made: no sync needed.
	total, onPort, metric, err := counts()
	if err != nil {
		t.Fatal(err)
	}
	// The cluster's total may count others' connections too, never fewer.
	if total-total0 < n || onPort-port0 != n || metric-metric0 != n {
		t.Errorf("after %d connections: alpha's total %d -> %d, %s %d -> %d, metric %v -> %v; want %d more each (at least, for the total)",
			n, total0, total, port, port0, onPort, metric0, metric, n)
	}
	// The port without connections is not among the busiest.
	for _, c := range statusJSON(t, o.sock).Clusters {
		for _, p := range c.Busiest {
			if p.Port == ns+"/web:metrics" {
				t.Errorf("a port without connections among the busiest: %+v", c.Busiest)
			}
		}
	}
}
