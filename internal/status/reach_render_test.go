package status

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestReportReach: a cluster reached through its nodes says how, whether
// its node list arrived (and why not: the missing RBAC), and its routes.
func TestReportReach(t *testing.T) {
	r := Report{Mode: "iptables", Version: "v1", StartedAt: now.Add(-time.Hour), Clusters: []ClusterStatus{
		{Name: "direct", Reachable: true, Synced: true, Refused: []Refusal{}, Reach: "direct"},
		{Name: "np", Reachable: true, Refused: []Refusal{}, Reach: "nodeport", NodeAddressTypes: []string{"InternalIP"},
			Nodes: &NodeWatch{WatchErrors: 3, LastError: `nodes is forbidden: User "x" cannot list resource "nodes"`, LastErrorAt: now.Add(-time.Minute)}},
		{Name: "rt", Reachable: true, Synced: true, Refused: []Refusal{}, Reach: "routes", NodeAddressTypes: []string{"InternalIP"},
			Nodes: &NodeWatch{Synced: true, Nodes: 3, Ready: 2},
			Routes: &Routes{Wanted: []string{"10.245.1.0/24 via 10.0.0.1", "10.245.2.0/24 via 10.0.0.2"}, Installed: 1,
				Refused: []string{"10.245.2.0/24 via 10.0.0.2: this host already has a route to 10.245.2.0/24 that is not ours"}}},
	}}
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"np:\n",
		"  reach nodeport (node addresses: InternalIP): node list NOT received yet\n",
		"  node watch: 3 errors, last 1m0s ago: nodes is forbidden: User \"x\" cannot list resource \"nodes\" (needs list and watch on nodes: packaging/rbac-nodes.yaml)\n",
		"rt:\n  reach routes (node addresses: InternalIP): 3 nodes, 2 Ready\n",
		"  routes: 1 of 2 installed (ip route show proto 95)\n",
		"    route refused: 10.245.2.0/24 via 10.0.0.2: this host already has a route",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "direct:") || strings.Contains(out, "reach direct") {
		t.Errorf("a direct cluster gets reach lines:\n%s", out)
	}
}
