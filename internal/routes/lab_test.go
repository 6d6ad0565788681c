//go:build e2e && linux

package routes_test

// The reach = "routes" and reach = "nodeport" building blocks against a real
// kube-apiserver and real packets, in the lab's namespaces:
//
//	go test -tags e2e -count=1 -v ./internal/routes/
//
// Nodes of the lab have pods behind them that nothing routes: the lab's
// outside host reaches them only by a route via the node, or through the
// node's NodePorts. The Node objects are created here, as kubelet would; the
// node watcher runs with the kube-outpost ServiceAccount's kubeconfig plus
// the node RBAC that reach = "nodeport" and "routes" need.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/routes"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// grantNodes is the RBAC reach = "nodeport" and "routes" add to
// packaging/rbac.yaml: list and watch Nodes, nothing else.
func grantNodes(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-outpost-nodes"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-outpost-nodes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kube-outpost-nodes"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kube-outpost", Namespace: "kube-outpost"}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestLabReach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "alpha", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")}},
		Log:      testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	alpha := l.Cluster("alpha")
	admin := alpha.Admin

	nodes := map[string]*lab.Node{}
	pods := map[string]*lab.Pod{}
	for _, name := range []string{"n1", "n2"} {
		n, err := l.AddNode(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := n.AddPod(ctx, "pod-"+name, []int{8080}, nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes[name], pods[name] = n, p
		if err := n.Register(ctx, admin); err != nil {
			t.Fatal(err)
		}
	}
	url := func(node string) string { return fmt.Sprintf("http://%s:8080/", pods[node].IP) }
	answers := func(node string) bool {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		body, err := l.HTTPGet(c, url(node))
		return err == nil && body == "pod-"+node
	}
	hostRoutes := func() string {
		out, err := l.HostRun(ctx, "ip", "route", "show")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ourRoutes := func() string {
		out, err := l.HostRun(ctx, "ip", "route", "show", "proto", fmt.Sprint(routes.Protocol))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(out), " ")
	}
	before := hostRoutes()
	for name := range nodes {
		if answers(name) {
			t.Fatalf("pod behind %s answers before any route", name)
		}
	}

	// The node watcher, with kube-outpost's own credentials: forbidden
	// until the node RBAC is granted, then synced.
	sa, err := l.ClientFromKubeconfig(alpha.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	snaps := make(chan []model.NodeInfo, 100)
	w := cluster.NewNodeWatcher(sa, cluster.NodeWatcherOptions{
		Cluster:  "alpha",
		OnChange: func(s []model.NodeInfo) { snaps <- s },
		Log:      slog.New(slog.NewTextHandler(testLog{t}, nil)),
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for deadline := time.Now().Add(30 * time.Second); w.Status().WatchErrors == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no watch error without the node RBAC")
		}
	}
	if st := w.Status(); st.Synced || !strings.Contains(st.LastError, "forbidden") {
		t.Fatalf("without the node RBAC: %+v", st)
	}
	grantNodes(ctx, t, admin)
	next := func(what string, ok func([]model.NodeInfo) bool) []model.NodeInfo {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case s := <-snaps:
				if ok(s) {
					return s
				}
			case <-timeout:
				t.Fatalf("no snapshot with %s", what)
			}
		}
	}
	snap := next("both nodes", func(s []model.NodeInfo) bool { return len(s) == 2 })
	t.Logf("nodes: %+v", snap)

	// The installer works on the lab host's routing table, from any
	// thread: its netlink handle is opened inside the host namespace.
	var h *netlink.Handle
	if err := lab.InNetns(l.HostNS, func() (err error) { h, err = netlink.NewHandle(); return err }); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	in := routes.New(routes.Options{Kernel: routes.NewKernel(h), Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	sync := func(snap []model.NodeInfo) {
		t.Helper()
		want, problems := routes.ForNodes("lab", snap, nil, []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")})
		if len(problems) > 0 {
			t.Errorf("ForNodes problems: %q", problems)
		}
		if err := in.Sync(ctx, want, nil); err != nil {
			t.Fatal(err)
		}
		if r := in.Refused(); len(r) > 0 {
			t.Errorf("refused: %v", r)
		}
	}

	sync(snap)
	n1, n2 := nodes["n1"], nodes["n2"]
	wantRoutes := fmt.Sprintf("%s via %s dev eth0 metric %d %s via %s dev eth0 metric %d",
		n1.PodCIDR, n1.IP, routes.Metric, n2.PodCIDR, n2.IP, routes.Metric)
	if got := ourRoutes(); got != wantRoutes {
		t.Errorf("ip route show proto %d: %q, want %q", routes.Protocol, got, wantRoutes)
	}
	for name := range nodes {
		if !answers(name) {
			t.Errorf("pod behind %s does not answer with its route", name)
		}
	}

	// n1 stops being Ready: its route goes, n2's stays.
	if err := lab.SetNodeReady(ctx, admin, "n1", corev1.ConditionUnknown); err != nil {
		t.Fatal(err)
	}
	snap = next("n1 not Ready", func(s []model.NodeInfo) bool { return len(s) == 2 && s[0].Name == "n1" && !s[0].Ready })
	sync(snap)
	if got, want := ourRoutes(), fmt.Sprintf("%s via %s dev eth0 metric %d", n2.PodCIDR, n2.IP, routes.Metric); got != want {
		t.Errorf("after n1 went NotReady: %q, want %q", got, want)
	}
	if answers("n1") {
		t.Error("pod behind the NotReady node still answers")
	}
	if !answers("n2") {
		t.Error("pod behind n2 lost its route")
	}

	// reach = "nodeport": a NodePort service whose port the apiserver
	// allocates, forwarded by n2 as its kube-proxy would. The endpoint
	// NodePortEndpoints picks answers; n1, not Ready, is left out.
	svc, err := admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodePort := svc.Spec.Ports[0].NodePort
	if err := n2.ForwardNodePort("tcp", int(nodePort), netip.AddrPortFrom(pods["n2"].IP, 8080)); err != nil {
		t.Fatal(err)
	}
	eps, excluded, reason := model.NodePortEndpoints(model.NodePortQuery{NodePort: uint16(nodePort), Nodes: snap})
	if len(eps) != 1 || eps[0].Addr != netip.AddrPortFrom(n2.IP, uint16(nodePort)) || reason != "" {
		t.Fatalf("NodePortEndpoints = %v, %q", eps, reason)
	}
	if len(excluded) != 1 || excluded[0].Address != n1.IP.String() {
		t.Errorf("excluded %v, want n1", excluded)
	}
	if body, err := l.HTTPGet(ctx, "http://"+eps[0].Addr.String()+"/"); err != nil || body != "pod-n2" {
		t.Errorf("via NodePort %v: %q, %v", eps[0].Addr, body, err)
	}
	if _, _, reason := model.NodePortEndpoints(model.NodePortQuery{Nodes: snap}); reason != model.NoNodePortReason {
		t.Errorf("without a NodePort: %q", reason)
	}

	// Cleanup: ours gone, the lab's own routes exactly as before.
	if err := in.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ourRoutes(); got != "" {
		t.Errorf("after Cleanup: %q", got)
	}
	if answers("n2") {
		t.Error("pod behind n2 answers after Cleanup")
	}
	if after := hostRoutes(); after != before {
		t.Errorf("host routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
