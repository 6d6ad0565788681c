package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// testNode is a Node as kubelet and the node IPAM controller leave it, with
// the bulk that stripNode must drop.
func testNode(name string, ready corev1.ConditionStatus, cidrs []string, addrs ...corev1.NodeAddress) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:          name,
			Labels:        map[string]string{"kubernetes.io/hostname": name},
			Annotations:   map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
		},
		Spec: corev1.NodeSpec{PodCIDRs: cidrs, ProviderID: "kind://" + name},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
				{Type: corev1.NodeReady, Status: ready, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()},
			},
			Addresses: addrs,
			Images:    []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1 << 20}},
			NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"},
		},
	}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	return n
}

func internal(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

func TestStripNode(t *testing.T) {
	n := testNode("n1", corev1.ConditionTrue, []string{"10.244.1.0/24", "fd00:244:1::/64"},
		internal("10.0.0.1"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"},
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"})
	n.Spec.Unschedulable = true
	got, err := stripNode(n)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00:244:1::/64"}, Unschedulable: true},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}},
			Addresses:  []corev1.NodeAddress{internal("10.0.0.1"), {Type: corev1.NodeExternalIP, Address: "203.0.113.1"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stripNode:\n got %+v\nwant %+v", got, want)
	}
	// What is stripped converts the same as the original.
	a, pa := nodeInfo(n)
	b, pb := nodeInfo(got.(*corev1.Node))
	if !a.Equal(b) || !reflect.DeepEqual(pa, pb) {
		t.Errorf("nodeInfo differs after stripNode: %+v %v / %+v %v", a, pa, b, pb)
	}
	// Anything else (a tombstone) passes through.
	if o, _ := stripNode("x"); o != "x" {
		t.Errorf("stripNode(non-node) = %v", o)
	}
}

func TestNodeInfo(t *testing.T) {
	addr := func(typ, ip string) model.NodeAddr {
		return model.NodeAddr{Type: typ, Addr: netip.MustParseAddr(ip)}
	}
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name     string
		node     *corev1.Node
		want     model.NodeInfo
		problems []string // substrings, in order
	}{
		{
			name: "ready dual-stack",
			node: testNode("a", corev1.ConditionTrue, []string{"10.244.1.0/24", "fd00:244:1::/64"},
				internal("10.0.0.1"), internal("fd00::1"), corev1.NodeAddress{Type: corev1.NodeExternalDNS, Address: "a.example"}),
			want: model.NodeInfo{Name: "a", Ready: true,
				Addresses: []model.NodeAddr{addr("InternalIP", "10.0.0.1"), addr("InternalIP", "fd00::1")},
				PodCIDRs:  []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:244:1::/64")}},
		},
		{
			name: "not ready",
			node: testNode("b", corev1.ConditionFalse, nil, internal("10.0.0.2")),
			want: model.NodeInfo{Name: "b", Addresses: []model.NodeAddr{addr("InternalIP", "10.0.0.2")}},
		},
		{
			name: "unknown is not ready",
			node: testNode("c", corev1.ConditionUnknown, nil),
			want: model.NodeInfo{Name: "c"},
		},
		{
			name: "no Ready condition at all",
			node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "d"}},
			want: model.NodeInfo{Name: "d"},
		},
		{
			name: "bad entries are skipped, good ones kept",
			node: testNode("e", corev1.ConditionTrue, []string{"10.244.5.0/24", "banana", "10.244.6.1/24", "::ffff:10.0.0.0/104", "10.244.5.0/24"},
				internal("10.0.0.300"), internal("fe80::1%eth0"), internal("::ffff:10.0.0.5"),
				corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.5"}),
			want: model.NodeInfo{Name: "e", Ready: true,
				Addresses: []model.NodeAddr{addr("InternalIP", "10.0.0.5"), addr("ExternalIP", "203.0.113.5")},
				PodCIDRs:  []netip.Prefix{pfx("10.244.5.0/24")}},
			problems: []string{
				`status.addresses[0] InternalIP "10.0.0.300" is not an IP address`,
				`status.addresses[1] InternalIP "fe80::1%eth0" has a zone`,
				`spec.podCIDRs[1] "banana" is not a CIDR`,
				`spec.podCIDRs[2] "10.244.6.1/24" is not a network address (did you mean 10.244.6.0/24?)`,
				`spec.podCIDRs[3] "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 prefix`,
			},
		},
		{
			name: "only the old spec.podCIDR",
			node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "f"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.7.0/24", Unschedulable: true}},
			want: model.NodeInfo{Name: "f", Unschedulable: true, PodCIDRs: []netip.Prefix{pfx("10.244.7.0/24")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := nodeInfo(tc.node)
			if !got.Equal(tc.want) {
				t.Errorf("nodeInfo:\n got %+v\nwant %+v", got, tc.want)
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d", problems, len(tc.problems))
			}
			for i, p := range tc.problems {
				if !strings.Contains(problems[i], p) {
					t.Errorf("problem %d = %q, want it to contain %q", i, problems[i], p)
				}
			}
		})
	}
}

// snapshots collects what a NodeWatcher publishes.
type snapshots struct {
	ch chan []model.NodeInfo
}

func (s snapshots) next(t *testing.T) []model.NodeInfo {
	t.Helper()
	select {
	case snap := <-s.ch:
		return snap
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot within 10s")
		return nil
	}
}

func (s snapshots) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case snap := <-s.ch:
		t.Fatalf("unexpected snapshot %+v", snap)
	case <-time.After(within):
	}
}

// syncBuffer is a log destination that the informer's goroutine and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func names(snap []model.NodeInfo) []string {
	var out []string
	for _, n := range snap {
		out = append(out, n.Name)
	}
	return out
}

func TestNodeWatcher(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake.NewClientset(
		testNode("n2", corev1.ConditionTrue, []string{"10.244.2.0/24"}, internal("10.0.0.2")),
		testNode("n1", corev1.ConditionTrue, []string{"10.244.1.0/24"}, internal("10.0.0.1")),
	)
	var logs syncBuffer
	snaps := snapshots{ch: make(chan []model.NodeInfo, 100)}
	w := NewNodeWatcher(client, NodeWatcherOptions{
		Cluster:  "prod",
		OnChange: func(s []model.NodeInfo) { snaps.ch <- s },
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if got, synced := w.Nodes(); got != nil || synced {
		t.Fatalf("before Start: %v, %v", got, synced)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	// The first snapshot is the whole list, sorted: never n1 alone.
	first := snaps.next(t)
	if got := names(first); !reflect.DeepEqual(got, []string{"n1", "n2"}) {
		t.Fatalf("first snapshot %v", got)
	}
	if first[0].PodCIDRs[0] != netip.MustParsePrefix("10.244.1.0/24") || !first[0].Ready {
		t.Errorf("n1 = %+v", first[0])
	}
	if got, synced := w.Nodes(); !synced || !reflect.DeepEqual(got, first) {
		t.Errorf("Nodes() = %v, %v", got, synced)
	}

	nodes := client.CoreV1().Nodes()
	update := func(name string, change func(*corev1.Node)) {
		t.Helper()
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		change(n)
		if _, err := nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A kubelet heartbeat changes nothing reach uses: no snapshot. The
	// change after it proves it was processed and dropped, since events
	// are handled in order.
	update("n1", func(n *corev1.Node) {
		n.Status.Conditions[1].LastHeartbeatTime = metav1.NewTime(time.Now().Add(time.Minute))
		n.Status.Images = nil
	})
	update("n2", func(n *corev1.Node) { n.Status.Conditions[1].Status = corev1.ConditionUnknown })
	snap := snaps.next(t)
	if len(snap) != 2 || snap[1].Name != "n2" || snap[1].Ready || !snap[0].Ready {
		t.Fatalf("after n2 went Unknown: %+v", snap)
	}
	if first[1].Ready != true {
		t.Error("an earlier snapshot was modified")
	}

	// A node with a bad pod CIDR: published with what is good, warned
	// about once, not again on its next heartbeat.
	bad := testNode("n3", corev1.ConditionTrue, []string{"10.244.3.7/24", "fd00:244:3::/64"}, internal("10.0.0.3"))
	if _, err := nodes.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	snap = snaps.next(t)
	if got := names(snap); !reflect.DeepEqual(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("after n3 was added: %v", got)
	}
	if c := snap[2].PodCIDRs; len(c) != 1 || c[0] != netip.MustParsePrefix("fd00:244:3::/64") {
		t.Errorf("n3 pod CIDRs %v", c)
	}
	update("n3", func(n *corev1.Node) {
		n.Status.Conditions[1].LastHeartbeatTime = metav1.NewTime(time.Now().Add(time.Hour))
	})
	if err := nodes.Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	snap = snaps.next(t)
	if got := names(snap); !reflect.DeepEqual(got, []string{"n1", "n3"}) {
		t.Fatalf("after n2 was deleted: %v", got)
	}
	if n := strings.Count(logs.String(), "node partly skipped"); n != 1 {
		t.Errorf("%d warnings about n3, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `did you mean 10.244.3.0/24?`) || !strings.Contains(logs.String(), "node=n3") {
		t.Errorf("warning does not say what is wrong with n3:\n%s", logs.String())
	}
	if st := w.Status(); !st.Synced || st.Nodes != 2 || st.WatchErrors != 0 {
		t.Errorf("Status() = %+v", st)
	}

	// Nothing is published after Stop.
	w.Stop()
	if err := nodes.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	snaps.none(t, 300*time.Millisecond)
}

func TestNodeWatcherEmptyCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snaps := snapshots{ch: make(chan []model.NodeInfo, 10)}
	w := NewNodeWatcher(fake.NewClientset(), NodeWatcherOptions{OnChange: func(s []model.NodeInfo) { snaps.ch <- s }})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// A cluster without nodes is a complete list too: the caller must
	// learn that there is nothing to route to.
	if snap := snaps.next(t); snap == nil || len(snap) != 0 {
		t.Fatalf("first snapshot of an empty cluster: %#v", snap)
	}
	snaps.none(t, 200*time.Millisecond)
}
