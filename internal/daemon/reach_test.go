package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/routes"
)

func labNode(name, ip, podCIDR string, ready bool) *corev1.Node {
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: []string{podCIDR}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
		},
	}
}

// TestSyncRoutes: the route installer is not synced before every routes
// cluster's node list is complete (it would delete the routes of the last
// run), then gets the routes of the Ready nodes, and status tells them.
func TestSyncRoutes(t *testing.T) {
	d, _ := testDaemon(t)
	leftover := routes.KernelRoute{Dst: netip.MustParsePrefix("10.245.9.0/24"), Via: netip.MustParseAddr("192.0.2.9"),
		Protocol: routes.Protocol, Metric: routes.Metric}
	kernel := routes.NewFake([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")}, leftover)
	d.routes = routes.New(routes.Options{Kernel: kernel})

	snaps := make(chan []model.NodeInfo, 10)
	nw := cluster.NewNodeWatcher(fake.NewClientset(
		labNode("n1", "192.0.2.1", "10.245.1.0/24", true),
		labNode("n2", "192.0.2.2", "10.245.2.0/24", false),
		labNode("n3", "192.0.2.3", "10.245.1.0/24", true), // claims n1's CIDR too
		labNode("n4", "192.0.2.4", "10.245.4.0/24", true),
	), cluster.NodeWatcherOptions{Cluster: "alpha", OnChange: func(s []model.NodeInfo) { snaps <- s }})
	d.clusters["alpha"] = &clusterHandle{cfg: config.Cluster{Name: "alpha", Reach: config.ReachRoutes}, nodes: nw}

	// Not listed yet: nothing is touched, the leftover of the last run
	// stays.
	if err := d.syncRoutes(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ops := kernel.Ops(); len(ops) != 0 {
		t.Fatalf("routes changed before the node list: %q", ops)
	}
	if rs := d.reachStatus(d.clusters["alpha"]); rs.reach != "routes" || rs.nodes == nil || rs.nodes.Synced || rs.routes != nil {
		t.Errorf("status before the node list: %+v", rs)
	}

	if err := nw.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	select {
	case <-snaps:
	case <-time.After(10 * time.Second):
		t.Fatal("no node list")
	}
	if err := d.syncRoutes(t.Context()); err != nil {
		t.Fatal(err)
	}
	// n2 is not Ready; n1 and n3 disagree about 10.245.1.0/24, so
	// neither is installed; the leftover goes.
	want := "10.245.4.0/24 via 192.0.2.4 proto 95 metric 2048\n"
	if got := kernel.Dump(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	rs := d.reachStatus(d.clusters["alpha"])
	if rs.nodes == nil || !rs.nodes.Synced || rs.nodes.Nodes != 4 || rs.nodes.Ready != 3 {
		t.Errorf("node status %+v", rs.nodes)
	}
	if rs.routes == nil || len(rs.routes.Wanted) != 3 || rs.routes.Installed != 1 || len(rs.routes.Refused) != 2 ||
		!strings.Contains(rs.routes.Refused[0], "wanted via several gateways") {
		t.Errorf("route status %+v", rs.routes)
	}

	// The cluster is removed by a reload: its routes go at the next sync.
	delete(d.clusters, "alpha")
	if err := d.syncRoutes(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := kernel.Dump(); got != "" {
		t.Errorf("routes after the routes cluster went: %q", got)
	}
}

// TestSyncRoutesWithoutRoutesClusters: routes of ours that an earlier
// configuration left are removed once, at the first sync, and the table is
// not read again.
func TestSyncRoutesWithoutRoutesClusters(t *testing.T) {
	d, _ := testDaemon(t)
	leftover := routes.KernelRoute{Dst: netip.MustParsePrefix("10.245.9.0/24"), Via: netip.MustParseAddr("192.0.2.9"),
		Protocol: routes.Protocol, Metric: routes.Metric}
	kernel := routes.NewFake([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")}, leftover)
	d.routes = routes.New(routes.Options{Kernel: kernel})
	for range 2 {
		if err := d.syncRoutes(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if ops := kernel.Ops(); len(ops) != 1 || !slices.ContainsFunc(ops, func(s string) bool { return strings.Contains(s, "10.245.9.0/24") }) {
		t.Errorf("ops %q, want the leftover deleted once", ops)
	}
}
