package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
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

// startListed starts a node watcher until the test ends, and returns once
// it has handed out its first node list.
func startListed(t *testing.T, nw *cluster.NodeWatcher, snaps <-chan []model.NodeInfo) {
	t.Helper()
	if err := nw.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	select {
	case <-snaps:
	case <-time.After(10 * time.Second):
		t.Fatal("no node list")
	}
}

// TestSyncRoutes: before a routes cluster's node list is complete, the
// routes of ours inside its pod_cidrs stay (a sync from an incomplete list
// would delete the routes of the last run); then it gets the routes of the
// Ready nodes, and status tells them.
func TestSyncRoutes(t *testing.T) {
	d, _ := testDaemon(t)
	leftover := routes.KernelRoute{Dst: netip.MustParsePrefix("10.245.9.0/24"), Via: netip.MustParseAddr("192.0.2.9"),
		Protocol: routes.Protocol, Metric: routes.Metric}
	kernel := routes.NewFake([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")}, leftover)
	d.routes.installer = routes.New(routes.Options{Kernel: kernel})

	snaps := make(chan []model.NodeInfo, 10)
	nw := cluster.NewNodeWatcher(fake.NewClientset(
		labNode("n1", "192.0.2.1", "10.245.1.0/24", true),
		labNode("n2", "192.0.2.2", "10.245.2.0/24", false),
		labNode("n3", "192.0.2.3", "10.245.1.0/24", true), // claims n1's CIDR too
		labNode("n4", "192.0.2.4", "10.245.4.0/24", true),
	), cluster.NodeWatcherOptions{Cluster: "alpha", OnChange: func(s []model.NodeInfo) { snaps <- s }})
	d.clusters.handles["alpha"] = &clusterHandle{cfg: config.Cluster{Name: "alpha", Reach: reach.Routes,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}}, nodes: nw}
	d.store.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "alpha", Reach: reach.Routes}}})
	d.routes.host = &routeHost{}
	noResolvers(t)

	// Not listed yet: nothing is touched, the leftover of the last run
	// stays.
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if ops := kernel.Ops(); len(ops) != 0 {
		t.Fatalf("routes changed before the node list: %q", ops)
	}
	if rs := d.reachStatus(d.clusters.handles["alpha"]); rs.reach != "routes" || rs.nodes == nil || rs.nodes.Synced ||
		rs.routes == nil || !slices.Equal(rs.routes.Wanted, []string{"10.245.9.0/24 via 192.0.2.9"}) || rs.routes.Installed != 1 {
		t.Errorf("status before the node list: %+v, routes %+v", rs, rs.routes)
	}

	startListed(t, nw, snaps)
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	// n2 is not Ready; n1 and n3 disagree about 10.245.1.0/24: with
	// neither in place, n1 comes first by name; the leftover goes.
	want := "10.245.1.0/24 via 192.0.2.1 proto 95 metric 2048\n10.245.4.0/24 via 192.0.2.4 proto 95 metric 2048\n"
	if got := kernel.Dump(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	rs := d.reachStatus(d.clusters.handles["alpha"])
	if rs.nodes == nil || !rs.nodes.Synced || rs.nodes.Nodes != 4 || rs.nodes.Ready != 3 {
		t.Errorf("node status %+v", rs.nodes)
	}
	if rs.routes == nil || len(rs.routes.Wanted) != 3 || rs.routes.Installed != 2 || len(rs.routes.Refused) != 1 ||
		!strings.HasPrefix(rs.routes.Refused[0], `node n3 of cluster "alpha": 10.245.1.0/24 via 192.0.2.3: 10.245.1.0/24 is also wanted via 192.0.2.1 by node n1 of cluster "alpha", which has precedence`) {
		t.Errorf("route status %+v", rs.routes)
	}

	// The cluster is removed by a reload: its routes go at the next sync.
	delete(d.clusters.handles, "alpha")
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if got := kernel.Dump(); got != "" {
		t.Errorf("routes after the routes cluster went: %q", got)
	}
}

// TestSyncRoutesPerCluster: a routes cluster whose node list is not known
// (its apiserver down since the restart) keeps the routes of ours inside
// its pod_cidrs, and holds back nobody: another routes cluster's nodes are
// routed meanwhile.
func TestSyncRoutesPerCluster(t *testing.T) {
	d, _ := testDaemon(t)
	leftover := routes.KernelRoute{Dst: netip.MustParsePrefix("10.246.7.0/24"), Via: netip.MustParseAddr("192.0.2.7"),
		Protocol: routes.Protocol, Metric: routes.Metric}
	stray := routes.KernelRoute{Dst: netip.MustParsePrefix("10.247.0.0/24"), Via: netip.MustParseAddr("192.0.2.8"),
		Protocol: routes.Protocol, Metric: routes.Metric} // in nobody's pod_cidrs
	kernel := routes.NewFake([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")}, leftover, stray)
	d.routes.installer = routes.New(routes.Options{Kernel: kernel})
	snaps := make(chan []model.NodeInfo, 10)
	up := cluster.NewNodeWatcher(fake.NewClientset(labNode("n1", "192.0.2.1", "10.245.1.0/24", true)),
		cluster.NodeWatcherOptions{Cluster: "alpha", OnChange: func(s []model.NodeInfo) { snaps <- s }})
	down := cluster.NewNodeWatcher(fake.NewClientset(), cluster.NodeWatcherOptions{Cluster: "beta"}) // never started
	d.clusters.handles["alpha"] = &clusterHandle{cfg: config.Cluster{Name: "alpha", Reach: reach.Routes,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}}, nodes: up, order: 0}
	d.clusters.handles["beta"] = &clusterHandle{cfg: config.Cluster{Name: "beta", Reach: reach.Routes,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.246.0.0/16")}}, nodes: down, order: 1}
	d.store.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "alpha", Reach: reach.Routes}},
		{Cluster: config.Cluster{Name: "beta", Reach: reach.Routes}}})
	d.routes.host = &routeHost{}
	noResolvers(t)
	startListed(t, up, snaps)
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	want := "10.245.1.0/24 via 192.0.2.1 proto 95 metric 2048\n10.246.7.0/24 via 192.0.2.7 proto 95 metric 2048\n"
	if got := kernel.Dump(); got != want {
		t.Errorf("routes with beta's node list unknown:\n%s\nwant:\n%s", got, want)
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
	d.routes.installer = routes.New(routes.Options{Kernel: kernel})
	for range 2 {
		if err := d.routes.Sync(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if ops := kernel.Ops(); len(ops) != 1 || !slices.ContainsFunc(ops, func(s string) bool { return strings.Contains(s, "10.245.9.0/24") }) {
		t.Errorf("ops %q, want the leftover deleted once", ops)
	}
}

// routeHost is a host with the given routes and no addresses.
type routeHost struct {
	routes []hostcheck.Route
	err    error
}

func (h *routeHost) Addrs() ([]hostcheck.Address, error) { return nil, h.err }
func (h *routeHost) Routes() ([]hostcheck.Route, error)  { return h.routes, h.err }

// noResolvers gives the test a host without resolvers, and restores the
// real reader after it.
func noResolvers(t *testing.T) { withResolvers(t) }

func withResolvers(t *testing.T, addrs ...string) {
	t.Helper()
	old := hostResolvers
	t.Cleanup(func() { hostResolvers = old })
	hostResolvers = func() []netip.Addr {
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
}

// routesCluster adds a routes cluster at place order in the configuration,
// with its node watcher started and listed.
func routesCluster(t *testing.T, d *Daemon, order int, cfg config.Cluster, nodes ...*corev1.Node) *fake.Clientset {
	t.Helper()
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, n)
	}
	cs := fake.NewClientset(objs...)
	snaps := make(chan []model.NodeInfo, 100)
	nw := cluster.NewNodeWatcher(cs, cluster.NodeWatcherOptions{Cluster: cfg.Name, OnChange: func(s []model.NodeInfo) { snaps <- s }})
	cfg.Reach = reach.Routes
	d.clusters.mu.Lock()
	d.clusters.handles[cfg.Name] = &clusterHandle{cfg: cfg, nodes: nw, order: order}
	// The model knows every configured cluster, as setClusters makes it:
	// route gateways pass its target check.
	var ccs []model.ClusterConfig
	for _, h := range d.clusters.handles {
		cc := model.ClusterConfig{Cluster: config.Cluster{Name: h.cfg.Name, ServiceCIDRs: h.cfg.ServiceCIDRs, Reach: h.cfg.Reach}}
		if ip, ok := hostcheck.APIServerAddr(h.cfg.Server); ok {
			cc.APIServerAddrs = []netip.Addr{ip}
		}
		ccs = append(ccs, cc)
	}
	d.store.SetClusters(ccs)
	d.clusters.mu.Unlock()
	if err := nw.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	select {
	case <-snaps:
	case <-time.After(10 * time.Second):
		t.Fatalf("cluster %s: no node list", cfg.Name)
	}
	return cs
}

// TestSyncRoutesContainment: a cluster's Nodes decide no route outside the
// cluster's pod_cidrs, none over the host's resolvers, gateways or any
// apiserver, and a newcomer never takes a destination from the route in
// place. Refusals show in status and are logged once.
func TestSyncRoutesContainment(t *testing.T) {
	d, _ := testDaemon(t)
	var logs bytes.Buffer
	d.routes.log = slog.New(slog.NewTextHandler(&logs, nil))
	kernel := routes.NewFake([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")})
	d.routes.installer = routes.New(routes.Options{Kernel: kernel})
	// A host whose default gateway and resolver are off its subnet, as on
	// hosts with a /32 address: no connected network covers them.
	d.routes.host = &routeHost{routes: []hostcheck.Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.245.254.1")},
		{Dst: netip.MustParsePrefix("192.0.2.0/24"), Connected: true},
	}}
	withResolvers(t, "10.245.53.53", "127.0.0.53")

	p := netip.MustParsePrefix
	routesCluster(t, d, 1, config.Cluster{Name: "beta", Server: "https://192.0.2.200:6443", PodCIDRs: []netip.Prefix{p("10.246.0.0/16"), p("10.245.7.0/24")}},
		labNode("b1", "192.0.2.21", "10.246.1.0/24", true),
		labNode("b7", "192.0.2.27", "10.245.7.0/24", true),
	)
	alphaNodes := routesCluster(t, d, 0, config.Cluster{Name: "alpha", Server: "https://10.245.100.10:6443", PodCIDRs: []netip.Prefix{p("10.245.0.0/16")}},
		labNode("a1", "192.0.2.1", "10.245.1.0/24", true),
		labNode("rogue", "192.0.2.66", "8.8.8.0/24", true),       // outside pod_cidrs
		labNode("greedy", "192.0.2.67", "10.0.0.0/8", true),      // more than pod_cidrs
		labNode("a-res", "192.0.2.68", "10.245.53.0/24", true),   // the host's resolver
		labNode("a-gw", "192.0.2.69", "10.245.254.0/24", true),   // the host's gateway
		labNode("a-api", "192.0.2.70", "10.245.100.0/24", true),  // alpha's own apiserver
		labNode("a-beta", "192.0.2.71", "10.246.100.0/24", true), // beta's apiserver, outside alpha's range
		labNode("a7", "192.0.2.17", "10.245.7.0/24", true),       // wanted by beta too
		labNode("a-via", "192.0.2.200", "10.245.9.0/24", true),   // via beta's apiserver
	)
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	// alpha comes first in the configuration (beta's pod_cidrs overlap
	// alpha's, which Load refuses; the order is the backstop).
	want := "10.245.1.0/24 via 192.0.2.1 proto 95 metric 2048\n" +
		"10.245.7.0/24 via 192.0.2.17 proto 95 metric 2048\n" +
		"10.246.1.0/24 via 192.0.2.21 proto 95 metric 2048\n"
	if got := kernel.Dump(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	alpha := d.reachStatus(d.clusters.handles["alpha"]).routes
	wantProblems := []string{
		"node greedy: pod CIDR 10.0.0.0/8 is not routed: it is outside the cluster's pod_cidrs (10.245.0.0/16)",
		"node rogue: pod CIDR 8.8.8.0/24 is not routed: it is outside the cluster's pod_cidrs (10.245.0.0/16)",
		"node a-beta: pod CIDR 10.246.100.0/24 is not routed: it is outside the cluster's pod_cidrs (10.245.0.0/16)",
		`node a-via of cluster "alpha": pod CIDR 10.245.9.0/24 is not routed: its gateway 192.0.2.200 is cluster "beta"'s apiserver address`,
	}
	if alpha == nil || !sameSet(alpha.Problems, wantProblems) {
		t.Errorf("alpha's problems: %q\nwant %q", alpha.Problems, wantProblems)
	}
	wantRefused := []string{
		`node a-api of cluster "alpha": 10.245.100.0/24 via 192.0.2.70: 10.245.100.0/24 covers 10.245.100.10, the apiserver of cluster "alpha"`,
		`node a-gw of cluster "alpha": 10.245.254.0/24 via 192.0.2.69: 10.245.254.0/24 covers 10.245.254.1, a default gateway of this host`,
		`node a-res of cluster "alpha": 10.245.53.0/24 via 192.0.2.68: 10.245.53.0/24 covers 10.245.53.53, a resolver of this host`,
	}
	if alpha == nil || alpha.Installed != 2 || len(alpha.Refused) != len(wantRefused) {
		t.Fatalf("alpha's routes: %+v", alpha)
	}
	for _, w := range wantRefused {
		if !slices.ContainsFunc(alpha.Refused, func(r string) bool { return strings.HasPrefix(r, w) }) {
			t.Errorf("alpha's refusals %q\nlack %q", alpha.Refused, w)
		}
	}
	beta := d.reachStatus(d.clusters.handles["beta"]).routes
	if beta == nil || beta.Installed != 1 || len(beta.Refused) != 1 ||
		!strings.Contains(beta.Refused[0], `by node a7 of cluster "alpha", which has precedence`) {
		t.Errorf("beta's routes: %+v", beta)
	}
	if n := strings.Count(logs.String(), "pod CIDR not routed"); n != 4 {
		t.Errorf("%d problems logged, want 4:\n%s", n, &logs)
	}

	// A newcomer copies a1's pod CIDR with a name that comes first: a1
	// keeps its route. The standing problems are not logged again.
	logs.Reset()
	kernel.Ops()
	if _, err := alphaNodes.CoreV1().Nodes().Create(t.Context(), labNode("a0-copy", "192.0.2.9", "10.245.1.0/24", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		nodes, _ := d.clusters.handles["alpha"].nodes.Nodes()
		if slices.ContainsFunc(nodes, func(n model.NodeInfo) bool { return n.Name == "a0-copy" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the copier is not in alpha's node list")
		}
	}
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if ops := kernel.Ops(); len(ops) != 0 {
		t.Errorf("the copier changed routes: %q", ops)
	}
	alpha = d.reachStatus(d.clusters.handles["alpha"]).routes
	if !slices.ContainsFunc(alpha.Refused, func(r string) bool {
		return strings.HasPrefix(r, `node a0-copy of cluster "alpha": 10.245.1.0/24 via 192.0.2.9: 10.245.1.0/24 is also wanted via 192.0.2.1 by node a1 of cluster "alpha", which has precedence`)
	}) {
		t.Errorf("alpha's refusals: %q", alpha.Refused)
	}
	if strings.Contains(logs.String(), "pod CIDR not routed") {
		t.Errorf("standing problems logged again:\n%s", &logs)
	}

	// Without the host's gateways no route is known safe: the sync
	// fails and the routes in place stay.
	d.routes.host = &routeHost{err: errors.New("netlink: no")}
	if err := d.routes.Sync(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "default gateways") {
		t.Errorf("sync without the host's routes: %v", err)
	}
	if got := kernel.Dump(); got != want {
		t.Errorf("routes after a failed read:\n%s\nwant:\n%s", got, want)
	}
}

func sameSet(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(s string) bool { return !slices.Contains(b, s) })
}
