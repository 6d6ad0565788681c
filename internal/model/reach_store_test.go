package model

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

func testNode(name string, ready bool, addr string) NodeInfo {
	return NodeInfo{Name: name, Ready: ready, Addresses: []NodeAddr{{Type: reach.NodeInternalIP, Addr: netip.MustParseAddr(addr)}}}
}

// newReachStore is newTestStore with c1 reached as kind says.
func newReachStore(t *testing.T, kind reach.Kind) *testStore {
	t.Helper()
	ts := &testStore{log: &warnCounter{}}
	ts.Store = NewStore(slog.New(ts.log), func() { ts.changes++ })
	cfg := testCfg
	cfg.Reach = kind
	ts.SetClusters([]ClusterConfig{cfg})
	ts.changes = 0
	return ts
}

func withNodePort(np int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		for i := range s.Spec.Ports {
			s.Spec.Ports[i].NodePort = np
		}
	}
}

func onNode(e discoveryv1.Endpoint, node string) discoveryv1.Endpoint {
	e.NodeName = ptr(node)
	return e
}

func TestNodePortReach(t *testing.T) {
	ts := newReachStore(t, reach.NodePort)
	// Own slices of ports: newSvc keeps the slice it is given.
	ts.UpsertService("c1", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)}, withNodePort(30080)))
	ts.UpsertSlice("c1", webSlice("web-1", onNode(readyEP("10.0.0.1"), "n1"), onNode(readyEP("10.0.0.2"), "n2")))
	ts.SetSynced("c1")
	if ts.cluster(t, "c1").Synced {
		t.Fatal("a nodeport cluster is synced before its first node list")
	}
	ts.changes = 0
	ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1"), testNode("n2", false, "192.0.2.2"), testNode("n3", true, "192.0.2.3")})
	ts.expectChanges(t, 1, "first node list")
	if !ts.cluster(t, "c1").Synced {
		t.Fatal("not synced after the first node list")
	}
	p := ts.port(t, webKey)
	checkEndpoints(t, p, "192.0.2.1:30080", "192.0.2.3:30080")
	if len(p.Excluded) != 1 || p.Excluded[0].Address != "192.0.2.2" || p.Excluded[0].Reason != ExcludedNotReady {
		t.Errorf("excluded: %v, want the NotReady node n2", fmtExcluded(p.Excluded))
	}

	// A node change rebuilds the port; the same list again changes nothing.
	ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1"), testNode("n2", true, "192.0.2.2"), testNode("n3", true, "192.0.2.3")})
	ts.expectChanges(t, 1, "n2 Ready")
	checkEndpoints(t, ts.port(t, webKey), "192.0.2.1:30080", "192.0.2.2:30080", "192.0.2.3:30080")
	ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1"), testNode("n2", true, "192.0.2.2"), testNode("n3", true, "192.0.2.3")})
	ts.expectChanges(t, 0, "the same nodes")

	// externalTrafficPolicy: Local: only the nodes with a ready endpoint
	// of the service answer on its NodePort.
	ts.UpsertService("c1", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)}, withNodePort(30080),
		func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }))
	ts.UpsertSlice("c1", webSlice("web-1", onNode(readyEP("10.0.0.1"), "n1"), onNode(notReadyEP("10.0.0.3"), "n3")))
	p = ts.port(t, webKey)
	checkEndpoints(t, p, "192.0.2.1:30080")
	if got := fmtExcluded(p.Excluded); len(got) != 2 || !strings.Contains(got[0], "filtered") || !strings.Contains(got[1], "filtered") {
		t.Errorf("excluded: %q, want n2 and n3 filtered", got)
	}
	// No endpoint at all: refused with the direct reason, not sent to
	// nodes that would refuse too.
	ts.UpsertSlice("c1", webSlice("web-1", onNode(notReadyEP("10.0.0.1"), "n1")))
	if p := ts.port(t, webKey); len(p.Endpoints) != 0 || p.NoEndpointsReason != "no ready endpoints" {
		t.Errorf("without a ready endpoint: %s", fmtPort(p))
	}
	if r := ts.Refusals(); len(r) != 0 {
		t.Errorf("refusals: %v", r)
	}
}

func TestNodePortReachWithoutNodePort(t *testing.T) {
	ts := newReachStore(t, reach.NodePort)
	ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1")})
	ts.UpsertService("c1", webSvc())
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))
	p := ts.port(t, webKey)
	if p == nil || len(p.Endpoints) != 0 || p.NoEndpointsReason != NoNodePortReason {
		t.Fatalf("a ClusterIP service with reach = nodeport: %v, want refused for %q", fmtPort(p), NoNodePortReason)
	}
	r := ts.Refusals()
	if len(r) != 1 || r[0].Name != "web" || !strings.Contains(r[0].Reason, NoNodePortReason) {
		t.Fatalf("refusals: %v, want web without a NodePort", r)
	}
	// Once per change: another slice update warns and counts no more.
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), readyEP("10.0.0.2")))
	ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1"), testNode("n2", true, "192.0.2.2")})
	if n := ts.log.count(); n != 1 {
		t.Errorf("%d warnings, want 1: %v", n, ts.log.warns)
	}
	if c := ts.RefusalCounts(); len(c) != 1 || c[0].Reason != ReasonNoNodePort || c[0].Count != 1 {
		t.Errorf("refusal counts: %+v, want one %s", c, ReasonNoNodePort)
	}
	// Given a NodePort, it is served and the refusal goes.
	ts.UpsertService("c1", webSvc(withNodePort(30080)))
	checkEndpoints(t, ts.port(t, webKey), "192.0.2.1:30080", "192.0.2.2:30080")
	if r := ts.Refusals(); len(r) != 0 {
		t.Errorf("refusals after the NodePort: %v", r)
	}
}

func TestNodePortReachNoNodes(t *testing.T) {
	ts := newReachStore(t, reach.NodePort)
	ts.UpsertService("c1", webSvc(withNodePort(30080)))
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))
	ts.SetNodes("c1", []NodeInfo{testNode("n1", false, "192.0.2.1")})
	p := ts.port(t, webKey)
	if len(p.Endpoints) != 0 || !strings.Contains(p.NoEndpointsReason, "1 node is not Ready") {
		t.Errorf("every node NotReady: %s", fmtPort(p))
	}
	// internalTrafficPolicy: Local is applied first: no node either.
	ts.UpsertService("c1", webSvc(withNodePort(30080), func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	}))
	ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1")})
	if p := ts.port(t, webKey); len(p.Endpoints) != 0 || !strings.Contains(p.NoEndpointsReason, "internalTrafficPolicy") {
		t.Errorf("internalTrafficPolicy: Local: %s", fmtPort(p))
	}
}

// Nodes that arrive for a cluster that is not reached through them change
// nothing, and a routes cluster keeps its pod endpoints but waits for them.
func TestRoutesAndDirectReachNodes(t *testing.T) {
	for _, kind := range []reach.Kind{reach.Routes, reach.Direct, ""} {
		ts := newReachStore(t, kind)
		ts.UpsertService("c1", webSvc(withNodePort(30080)))
		ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))
		ts.SetSynced("c1")
		if got, want := ts.cluster(t, "c1").Synced, kind != reach.Routes; got != want {
			t.Errorf("reach %q: synced %v before the node list, want %v", kind, got, want)
		}
		ts.changes = 0
		ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1")})
		if want := map[bool]int{true: 1, false: 0}[kind == reach.Routes]; ts.changes != want {
			t.Errorf("reach %q: %d changes for the node list, want %d", kind, ts.changes, want)
		}
		if !ts.cluster(t, "c1").Synced {
			t.Errorf("reach %q: not synced", kind)
		}
		checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")
	}
	// A cluster that is not configured: ignored.
	newReachStore(t, reach.NodePort).SetNodes("nope", nil)
}
