//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/status"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// TestOneClusterDown: one cluster down never holds the others (issue 13,
// guarantee 5). One daemon follows the three clusters of the multi-cluster
// lab: a (reach = "routes"), b (direct) and c (reach = "routes", its pods
// behind a lab node). With all three up, then with a's apiserver stopped,
// then after a daemon restart while it is still down (a's node list unknown
// to the new daemon), an endpoint replaced and a service created in b and c
// are each followed within followWithin, and a new node of c gets its route.
// The latencies of each phase are logged side by side; status says a is
// unreachable and b and c synced, and a's rules and routes keep serving.
func TestOneClusterDown(t *testing.T) {
	l, mpods := multiLab(t)
	ctx := context.Background()
	a, b, c := l.Cluster("a"), l.Cluster("b"), l.Cluster("c")

	// a's and c's pods sit behind nodes that nothing routes to but the
	// routes the daemon installs: na for a; nc, and later nc2, for c.
	nodes := map[string]*lab.Node{}
	rpods := map[string]*lab.Pod{}
	for _, n := range []struct{ node, pod string }{{"na", "ra1"}, {"nc", "rc1"}, {"nc", "rc2"}, {"nc2", "rc3"}} {
		if nodes[n.node] == nil {
			node, err := l.AddNode(ctx, n.node)
			if err != nil {
				t.Fatal(err)
			}
			nodes[n.node] = node
		}
		p, err := nodes[n.node].AddPod(ctx, n.pod, []int{8080}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rpods[n.pod] = p
	}
	mb2, err := l.AddPod(ctx, "mb2", []int{8080}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(pod string) string {
		if p := rpods[pod]; p != nil {
			return p.IP.String()
		}
		if pod == "mb2" {
			return mb2.IP.String()
		}
		return mpods[pod].IP.String()
	}
	for cl, ns := range map[*lab.Cluster][]string{a: {"na"}, c: {"nc"}} {
		applyNodeRBAC(ctx, t, cl.Admin)
		for _, n := range ns {
			if err := nodes[n].Register(ctx, cl.Admin); err != nil {
				t.Fatal(err)
			}
		}
	}

	sock := statusSocket(t)
	cfg := mcConfig(t, l, sock, map[string]string{
		"a": fmt.Sprintf("local_service_cidr = %q\nreach = \"routes\"\npod_cidrs = [%q]\n", mcLocalA, nodes["na"].PodCIDR),
		"b": fmt.Sprintf("local_service_cidr = %q\n", mcLocalB),
		"c": fmt.Sprintf("reach = \"routes\"\npod_cidrs = [%q, %q]\n", nodes["nc"].PodCIDR, nodes["nc2"].PodCIDR),
	})
	d := startDaemonIn(t, l, cfg)

	// One service in each cluster, answering before anything breaks. The
	// clusters share one service range: a's and b's are reached in their
	// local ranges.
	http1 := []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080}}
	at := map[string]func(netip.Addr) netip.Addr{
		"a": func(v netip.Addr) netip.Addr { return inRange(v, mcLocalA) },
		"b": func(v netip.Addr) netip.Addr { return inRange(v, mcLocalB) },
		"c": func(v netip.Addr) netip.Addr { return v },
	}
	admin := map[string]kubernetes.Interface{"a": a.Admin, "b": b.Admin, "c": c.Admin}
	webs := map[string]string{}
	for name, pod := range map[string]string{"a": "ra1", "b": "mb", "c": "rc1"} {
		ns := namespace(t, admin[name], "down")
		vip := service(t, admin[name], ns, "web", http1)
		slice(t, admin[name], ns, "web", "1", http1, []ep{readyEP(addr(pod))})
		webs[name] = url(at[name](vip), 80)
		answeredByIn(t, l, webs[name], 3, pod)
	}

	// changes makes the changes of one phase in b and c, one at a time,
	// and returns how long each took to be followed.
	type latency struct {
		what string
		took time.Duration
	}
	var figures []latency
	changes := func(phase string, bPod, cPod, newNode string) {
		t.Helper()
		for _, ch := range []struct{ cluster, pod string }{{"b", bPod}, {"c", cPod}} {
			adm := admin[ch.cluster]
			begin := time.Now()
			slice(t, adm, "down", "web", "1", http1, []ep{readyEP(addr(ch.pod))})
			what := fmt.Sprintf("%s: %s's endpoint replaced", phase, ch.cluster)
			figures = append(figures, latency{what, followedIn(t, l, what, begin, webs[ch.cluster], ch.pod)})

			name := fmt.Sprintf("new-%d", len(figures))
			begin = time.Now()
			vip := service(t, adm, "down", name, http1)
			slice(t, adm, "down", name, "1", http1, []ep{readyEP(addr(ch.pod))})
			what = fmt.Sprintf("%s: %s's service created", phase, ch.cluster)
			figures = append(figures, latency{what, followedIn(t, l, what, begin, url(at[ch.cluster](vip), 80), ch.pod)})
		}
		if newNode == "" {
			return
		}
		// A node joins c, with the only endpoint of a new service behind
		// it: the route to its pods must be installed for an answer.
		pod := map[string]string{"nc2": "rc3"}[newNode]
		begin := time.Now()
		if err := nodes[newNode].Register(ctx, c.Admin); err != nil {
			t.Fatal(err)
		}
		vip := service(t, c.Admin, "down", "behind-"+newNode, http1)
		slice(t, c.Admin, "down", "behind-"+newNode, "1", http1, []ep{readyEP(addr(pod))})
		what := fmt.Sprintf("%s: c's new node routed, its service created", phase)
		figures = append(figures, latency{what, followedIn(t, l, what, begin, url(vip, 80), pod)})
	}
	clusterState := func(r status.Report, name string) (*status.ClusterStatus, error) {
		cs := clusterIn(r, name)
		if cs == nil {
			return nil, fmt.Errorf("no cluster %s in status", name)
		}
		return cs, nil
	}
	othersSynced := func(r status.Report) error {
		for _, name := range []string{"b", "c"} {
			cs, err := clusterState(r, name)
			if err != nil {
				return err
			}
			if !cs.Synced || !cs.Reachable {
				return fmt.Errorf("cluster %s: synced %v, reachable %v, last error %q", name, cs.Synced, cs.Reachable, cs.LastError)
			}
		}
		if cs, _ := clusterState(r, "c"); cs.Routes == nil || len(cs.Routes.Refused) != 0 {
			return fmt.Errorf("cluster c's routes: %+v", cs.Routes)
		}
		return nil
	}

	changes("all up", "mb2", "rc2", "")

	if err := a.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.StartAPIServer(context.Background()); err != nil {
			t.Errorf("starting a's apiserver again: %v", err)
		}
	})
	eventually(t, 30*time.Second, "status: a unreachable, b and c synced", func() error {
		r, err := statusOf(l, sock)
		if err != nil {
			return err
		}
		cs, err := clusterState(r, "a")
		if err != nil {
			return err
		}
		if cs.Reachable || cs.UnreachableSince.IsZero() {
			return fmt.Errorf("cluster a: reachable %v, unreachable since %v", cs.Reachable, cs.UnreachableSince)
		}
		return othersSynced(r)
	})
	changes("a down", "mb", "rc1", "nc2")
	// a's rules, and the route to its node, keep serving.
	answeredByIn(t, l, webs["a"], 3, "ra1")

	// A new daemon while a is still down: it has never heard a, nor its
	// nodes; b and c are followed as before.
	d.stop()
	startDaemonIn(t, l, cfg)
	// Changes are measured from when b and c have synced: not the start.
	eventually(t, 30*time.Second, "status after the restart: a neither synced nor reachable, b and c synced", func() error {
		r, err := statusOf(l, sock)
		if err != nil {
			return err
		}
		if cs, err := clusterState(r, "a"); err != nil || cs.Synced || cs.Reachable {
			return fmt.Errorf("cluster a %+v (%v)", cs, err)
		}
		return othersSynced(r)
	})
	changes("a down, daemon restarted", "mb2", "rc3", "")
	answeredByIn(t, l, webs["a"], 3, "ra1")
	if text, err := l.HostRun(ctx, binary, "status", "--socket", sock); err == nil {
		t.Logf("kube-outpost status, a down:\n%s", text)
	}

	var b2 strings.Builder
	for _, f := range figures {
		fmt.Fprintf(&b2, "\n  %-60s %s", f.what, f.took.Round(10*time.Millisecond))
	}
	t.Logf("change latencies:%s", b2.String())
}

// inRange is v at the same offset in to as in the lab clusters' service
// range: where local_service_cidr maps it.
func inRange(v netip.Addr, to netip.Prefix) netip.Addr {
	a, base, off := to.Addr().As4(), mcRange.Addr().As4(), v.As4()
	for i := range a {
		a[i] += off[i] - base[i]
	}
	return netip.AddrFrom4(a)
}
