//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/status"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The cluster of TestReach, in a lab of its own: a remote lab has no nodes.
var deltaRange = netip.MustParsePrefix("10.99.0.0/16")

// deltaPods is delta's pod_cidrs: the lab gives its nodes pod CIDRs
// 10.245.k.0/24.
var deltaPods = netip.MustParsePrefix("10.245.0.0/16")

// TestReach runs kube-outpost for a cluster whose pods this host cannot
// route to: they sit behind two lab nodes, which forward for them, and
// nothing routes their subnets. reach = "routes" makes them reachable by
// routes via the nodes that the daemon installs; reach = "nodeport" by
// sending each ClusterIP to the nodes' NodePort, which each node forwards
// to its own pod. Node objects are created here, as kubelet would, and the
// kube-outpost ServiceAccount gets packaging/rbac-nodes.yaml.
func TestReach(t *testing.T) {
	if os.Getenv("KO_E2E_REMOTE") != "" {
		t.Skip("a remote lab has no nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, labOptions(lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "delta", ServiceCIDR: deltaRange}},
		Log:      os.Stderr,
	}))
	if err != nil {
		t.Fatalf("starting the reach lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the reach lab: %v", err)
		}
	})
	delta := l.Cluster("delta")
	admin := delta.Admin
	nodes := map[string]*lab.Node{}
	pods := map[string]*lab.Pod{} // by node: r1 behind n1, r2 behind n2
	for i, name := range []string{"n1", "n2"} {
		n, err := l.AddNode(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := n.AddPod(ctx, fmt.Sprintf("r%d", i+1), []int{8080}, nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes[name], pods[name] = n, p
		if err := n.Register(ctx, admin); err != nil {
			t.Fatal(err)
		}
	}
	applyNodeRBAC(ctx, t, admin)
	podAnswers := func(node string) error {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		body, err := l.HTTPGet(c, fmt.Sprintf("http://%s:8080/", pods[node].IP))
		if err != nil {
			return err
		}
		if want := pods[node].Name; body != want {
			return fmt.Errorf("pod %s's address answered %q", want, body)
		}
		return nil
	}
	ourRoutes := func() string {
		out, err := l.HostRun(ctx, "ip", "route", "show", "proto", "95")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(out), " ")
	}
	routeOf := func(node string) string {
		return fmt.Sprintf("%s via %s dev eth0", nodes[node].PodCIDR, nodes[node].IP)
	}
	for node := range nodes {
		if podAnswers(node) == nil {
			t.Fatalf("the pod behind %s answers before anything routes it: the test would prove nothing", node)
		}
	}
	config := func(t *testing.T, sock, reach string) string {
		cfg := fmt.Sprintf("mode = %q\nmin_sync_period = \"200ms\"\nstatus_socket = %q\n\n[[clusters]]\nname = \"delta\"\nkubeconfig = %q\nservice_cidrs = [%q]\nreach = %q\n",
			mode, sock, delta.Kubeconfig, deltaRange.String(), reach)
		if reach == "routes" {
			cfg += fmt.Sprintf("pod_cidrs = [%q]\n", deltaPods.String())
		}
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	reachStatus := func(sock string) (*status.ClusterStatus, error) {
		r, err := statusOf(l, sock)
		if err != nil {
			return nil, err
		}
		cs := clusterIn(r, "delta")
		if cs == nil {
			return nil, errors.New("no cluster delta in status")
		}
		return cs, nil
	}
	ports := []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080}}

	t.Run("routes: pods behind the nodes answer through the routes the daemon installs", func(t *testing.T) {
		sock := statusSocket(t)
		d := startDaemonIn(t, l, config(t, sock, "routes"))
		ns := namespace(t, admin, "routes")
		vip := service(t, admin, ns, "web", ports)
		slice(t, admin, ns, "web", "1", ports, []ep{readyEP(pods["n1"].IP.String()), readyEP(pods["n2"].IP.String())})
		answeredByIn(t, l, url(vip, 80), 20, "r1", "r2")
		if got, want := ourRoutes(), routeOf("n1")+" metric 2048 "+routeOf("n2")+" metric 2048"; got != want {
			t.Errorf("ip route show proto 95: %q, want %q", got, want)
		}
		eventually(t, 30*time.Second, "status shows the nodes and both routes", func() error {
			cs, err := reachStatus(sock)
			if err != nil {
				return err
			}
			if cs.Reach != "routes" || cs.Nodes == nil || !cs.Nodes.Synced || cs.Nodes.Nodes != 2 || cs.Nodes.Ready != 2 ||
				cs.Routes == nil || cs.Routes.Installed != 2 || len(cs.Routes.Refused) != 0 || !cs.Synced {
				return fmt.Errorf("status: reach %q, synced %v, nodes %+v, routes %+v", cs.Reach, cs.Synced, cs.Nodes, cs.Routes)
			}
			return nil
		})

		// n1 stops being Ready: its route goes, and with it its pod.
		if err := lab.SetNodeReady(ctx, admin, "n1", corev1.ConditionUnknown); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "n1's route withdrawn", func() error {
			if got, want := ourRoutes(), routeOf("n2")+" metric 2048"; got != want {
				return fmt.Errorf("ip route show proto 95: %q, want %q", got, want)
			}
			return nil
		})
		if podAnswers("n1") == nil {
			t.Error("the pod behind the NotReady node n1 still answers")
		}
		if err := podAnswers("n2"); err != nil {
			t.Errorf("the pod behind n2: %v", err)
		}
		if err := lab.SetNodeReady(ctx, admin, "n1", corev1.ConditionTrue); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "n1's route back", func() error { return podAnswers("n1") })

		// Routes stay when the daemon stops, like the rules; cleanup
		// removes them, and nothing else.
		d.stop()
		if got := ourRoutes(); !strings.Contains(got, routeOf("n1")) || !strings.Contains(got, routeOf("n2")) {
			t.Errorf("after the daemon stopped: %q, want both routes still there", got)
		}
		other, err := l.HostRun(ctx, "ip", "route", "show")
		if err != nil {
			t.Fatal(err)
		}
		out, err := l.HostRun(ctx, binary, "cleanup")
		if err != nil {
			t.Fatalf("kube-outpost cleanup: %v\n%s", err, out)
		}
		if got := ourRoutes(); got != "" {
			t.Errorf("after cleanup: ip route show proto 95: %q", got)
		}
		after, err := l.HostRun(ctx, "ip", "route", "show")
		if err != nil {
			t.Fatal(err)
		}
		kept := regexp.MustCompile(`(?m)^.*proto 95.*\n`).ReplaceAllString(other, "")
		if after != kept {
			t.Errorf("cleanup changed routes not ours:\nbefore %q\nafter  %q", kept, after)
		}
		for node := range nodes {
			if podAnswers(node) == nil {
				t.Errorf("the pod behind %s answers after cleanup", node)
			}
		}
	})

	t.Run("nodeport: a ClusterIP goes to the nodes' NodePort", func(t *testing.T) {
		sock := statusSocket(t)
		startDaemonIn(t, l, config(t, sock, "nodeport"))
		ns := namespace(t, admin, "nodeport")
		vip := service(t, admin, ns, "web", ports, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort })
		got, err := admin.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np := int(got.Spec.Ports[0].NodePort)
		if np == 0 {
			t.Fatal("the apiserver gave the NodePort service no node port")
		}
		// Each node's kube-proxy, with one local endpoint each.
		for node, n := range nodes {
			if err := n.ForwardNodePort("tcp", np, netip.AddrPortFrom(pods[node].IP, 8080)); err != nil {
				t.Fatal(err)
			}
		}
		slice(t, admin, ns, "web", "1", ports, []ep{readyEP(pods["n1"].IP.String()), readyEP(pods["n2"].IP.String())})
		answeredByIn(t, l, url(vip, 80), 20, "r1", "r2")
		for node := range nodes {
			if podAnswers(node) == nil {
				t.Errorf("the pod behind %s answers at its own address: nodeport should be the only way", node)
			}
		}
		if r := ourRoutes(); r != "" {
			t.Errorf("reach = nodeport installed routes: %q", r)
		}

		// A ClusterIP-only service has no node port to send to: refused,
		// and status says why.
		plain := service(t, admin, ns, "plain", ports)
		slice(t, admin, ns, "plain", "1", ports, []ep{readyEP(pods["n1"].IP.String())})
		eventually(t, 30*time.Second, "the ClusterIP-only service refused", func() error { return refusedIn(l, url(plain, 80)) })
		eventually(t, 30*time.Second, "status reports the service without a NodePort", func() error {
			r, err := statusOf(l, sock)
			if err != nil {
				return err
			}
			return refusalIn(r, "delta", ns, "plain", model.NoNodePortReason)
		})

		// A NotReady node is skipped: only n2's pod answers.
		if err := lab.SetNodeReady(ctx, admin, "n1", corev1.ConditionFalse); err != nil {
			t.Fatal(err)
		}
		answeredByIn(t, l, url(vip, 80), 20, "r2")
		cs, err := reachStatus(sock)
		if err != nil {
			t.Fatal(err)
		}
		if cs.Reach != "nodeport" || cs.Nodes == nil || cs.Nodes.Nodes != 2 || cs.Nodes.Ready != 1 || cs.Routes != nil {
			t.Errorf("status: reach %q, nodes %+v, routes %+v", cs.Reach, cs.Nodes, cs.Routes)
		}
		if err := lab.SetNodeReady(ctx, admin, "n1", corev1.ConditionTrue); err != nil {
			t.Fatal(err)
		}
		answeredByIn(t, l, url(vip, 80), 20, "r1", "r2")
	})

	// The attacker is delta's admin: Nodes are theirs to write. One Node
	// claims, as its pod CIDR, the address of a resolver-like listener the
	// host reaches through its own route (outside pod_cidrs); another,
	// whose name comes before n1's, copies n1's pod CIDR. Neither may
	// change where the host's packets go.
	t.Run("routes: a node cannot route beyond pod_cidrs nor take another node's pod CIDR", func(t *testing.T) {
		dns, err := l.AddPod(ctx, "dns", []int{8080}, []int{53})
		if err != nil {
			t.Fatal(err)
		}
		hostRoute := func(dst netip.Addr) string {
			out, err := l.HostRun(ctx, "ip", "route", "get", dst.String())
			if err != nil {
				t.Fatal(err)
			}
			return strings.Join(strings.Fields(out), " ")
		}
		dnsRoute := hostRoute(dns.IP)
		if !strings.Contains(dnsRoute, "via 10.250.0.1") {
			t.Fatalf("the lab host reaches %v by %q, not by its own route via the lab router", dns.IP, dnsRoute)
		}
		sock := statusSocket(t)
		d := startDaemonIn(t, l, config(t, sock, "routes"))
		both := routeOf("n1") + " metric 2048 " + routeOf("n2") + " metric 2048"
		eventually(t, 30*time.Second, "the honest nodes' routes", func() error {
			if got := ourRoutes(); got != both {
				return fmt.Errorf("ip route show proto 95: %q, want %q", got, both)
			}
			return nil
		})
		others := func() string {
			out, err := l.HostRun(ctx, "ip", "route", "show")
			if err != nil {
				t.Fatal(err)
			}
			return regexp.MustCompile(`(?m)^.*proto 95.*\n`).ReplaceAllString(out, "")
		}
		before := others()

		rogueCIDR := netip.PrefixFrom(dns.IP, 32)
		registerNode(ctx, t, admin, "rogue", "10.250.0.252", rogueCIDR.String())
		registerNode(ctx, t, admin, "a-copy", "10.250.0.253", nodes["n1"].PodCIDR.String())
		wantProblem := fmt.Sprintf("node rogue: pod CIDR %s is not routed: it is outside the cluster's pod_cidrs (%s)", rogueCIDR, deltaPods)
		wantRefused := fmt.Sprintf(`node a-copy of cluster "delta": %s via 10.250.0.253: %s is also wanted via %s by node n1 of cluster "delta", which has precedence`,
			nodes["n1"].PodCIDR, nodes["n1"].PodCIDR, nodes["n1"].IP)
		eventually(t, 30*time.Second, "status shows both claims refused", func() error {
			cs, err := reachStatus(sock)
			if err != nil {
				return err
			}
			if cs.Nodes == nil || cs.Nodes.Nodes != 4 || cs.Routes == nil || cs.Routes.Installed != 2 ||
				!slices.Contains(cs.Routes.Problems, wantProblem) || len(cs.Routes.Refused) != 1 || !strings.HasPrefix(cs.Routes.Refused[0], wantRefused) {
				return fmt.Errorf("status: nodes %+v, routes %+v", cs.Nodes, cs.Routes)
			}
			return nil
		})
		// And in metrics: the outside CIDR and the copy.
		eventually(t, 10*time.Second, "the refused routes counted in metrics", func() error {
			out, err := l.HostRun(context.Background(), "curl", "-sS", "http://127.0.0.1:10249/metrics")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if want := `kube_outpost_routes_refused{cluster="delta"} 2`; !strings.Contains(out, want) {
				return fmt.Errorf("no %q in the metrics", want)
			}
			return nil
		})

		// The kernel's table: ours are the honest ones, the host's own
		// are as they were, and the listener is reached as before.
		if got := ourRoutes(); got != both {
			t.Errorf("ip route show proto 95: %q, want %q", got, both)
		}
		if after := others(); after != before {
			t.Errorf("the host's own routes changed:\nbefore %q\nafter  %q", before, after)
		}
		if got := hostRoute(dns.IP); got != dnsRoute {
			t.Errorf("ip route get %v: %q, was %q", dns.IP, got, dnsRoute)
		}
		// Real packets: the listener and the pods behind both honest nodes
		// answer, and a ClusterIP still leads to n1's pod.
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if body, err := l.HTTPGet(c, fmt.Sprintf("http://%s:8080/", dns.IP)); err != nil || body != "dns" {
			t.Errorf("the resolver-like listener over HTTP: %q, %v", body, err)
		}
		if body, err := l.UDPRequest(c, netip.AddrPortFrom(dns.IP, 53).String(), "ping"); err != nil || body != "dns" {
			t.Errorf("the resolver-like listener over UDP: %q, %v", body, err)
		}
		for node := range nodes {
			if err := podAnswers(node); err != nil {
				t.Errorf("the pod behind %s: %v", node, err)
			}
		}
		ns := namespace(t, admin, "contained")
		vip := service(t, admin, ns, "web", ports)
		slice(t, admin, ns, "web", "1", ports, []ep{readyEP(pods["n1"].IP.String())})
		answeredByIn(t, l, url(vip, 80), 10, "r1")

		// Each refusal is logged once, though syncs went on.
		log := d.log.String()
		if n := strings.Count(log, "pod CIDR not routed"); n != 1 || !strings.Contains(log, "node rogue") {
			t.Errorf("%d warnings about the rogue pod CIDR, want 1", n)
		}
		copies := 0
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "route not installed") && strings.Contains(line, "a-copy") {
				copies++
			}
		}
		if copies != 1 {
			t.Errorf("%d warnings about the copied pod CIDR, want 1", copies)
		}
	})
}

// registerNode creates a Ready Node at ip with podCIDR, as its kubelet and
// an admin who writes Nodes by hand would; the test deletes it at its end.
func registerNode(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, ip, podCIDR string) {
	t.Helper()
	created, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// applyNodeRBAC applies packaging/rbac-nodes.yaml, which binds the
// kube-outpost ServiceAccount that the lab's kubeconfigs are of.
func applyNodeRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "packaging", "rbac-nodes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		kinds[tm.Kind]++
		switch tm.Kind {
		case "ClusterRole":
			var role rbacv1.ClusterRole
			if err = yaml.UnmarshalStrict([]byte(doc), &role); err == nil {
				_, err = cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{})
			}
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err = yaml.UnmarshalStrict([]byte(doc), &b); err == nil {
				_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &b, metav1.CreateOptions{})
			}
		default:
			err = fmt.Errorf("unexpected kind %q", tm.Kind)
		}
		if err != nil {
			t.Fatalf("rbac-nodes.yaml: %v", err)
		}
	}
	if kinds["ClusterRole"] != 1 || kinds["ClusterRoleBinding"] != 1 {
		t.Fatalf("rbac-nodes.yaml has %v, want one ClusterRole and one ClusterRoleBinding", kinds)
	}
}

// statusOf is statusJSON for a daemon of lab l, as an error.
func statusOf(l *lab.Lab, sock string) (status.Report, error) {
	var r status.Report
	out, err := l.HostCommand(context.Background(), binary, "status", "--socket", sock, "--output", "json").Output()
	if err != nil {
		return r, fmt.Errorf("kube-outpost status: %v\n%s", err, out)
	}
	err = json.Unmarshal(out, &r)
	return r, err
}
