package model

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

var savedAt = time.Date(2026, 11, 28, 3, 41, 45, 0, time.UTC)

// TestExport: only a synced cluster's objects are exported, only those that
// build something and that the limits admit, sorted; the revision moves
// with every change.
func TestExport(t *testing.T) {
	ts := limitedStore(t, Limits{MaxServices: 3})
	if _, ok := ts.Revision("c1"); ok {
		t.Error("Revision answers before the cluster has synced")
	}
	for i, name := range []string{"web", "api", "late"} {
		ts.UpsertService("c1", newSvc(name, []string{nthIP96(10 + i)}, webPorts, bornAt(time.Duration(i)*time.Minute)))
		ts.UpsertSlice("c1", newSlice(name, name+"-1", discoveryv1.AddressTypeIPv4, slicePorts, readyEP(nthIP(i+1))))
	}
	// Born before late: a headless service's names count as a service.
	ts.UpsertService("c1", newSvc("headless", []string{"None"}, webPorts, bornAt(90*time.Second)))
	ts.UpsertService("c1", newSvc("ext", nil, nil, bornAt(time.Hour), externalName("example.com")))
	if _, _, ok := ts.Export("c1"); ok {
		t.Fatal("Export answers before the cluster has synced")
	}
	ts.SetSynced("c1")
	objs, rev, ok := ts.Export("c1")
	if !ok {
		t.Fatal("Export does not answer for a synced cluster")
	}
	var got []string
	for _, s := range objs.Services {
		got = append(got, s.Name)
	}
	for _, es := range objs.Slices {
		got = append(got, es.Name)
	}
	// late and ext are over max_services; headless builds its names.
	if want := "api headless web api-1 web-1"; strings.Join(got, " ") != want {
		t.Errorf("exported %q, want %q", strings.Join(got, " "), want)
	}
	if objs.NodesKnown {
		t.Error("a direct cluster exports a node list")
	}
	if r, ok := ts.Revision("c1"); !ok || r != rev {
		t.Errorf("Revision %d, %v; Export's %d", r, ok, rev)
	}
	ts.UpsertSlice("c1", newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, slicePorts, readyEP("10.0.0.9")))
	if r, _ := ts.Revision("c1"); r == rev {
		t.Error("the revision stayed after a change")
	}
	if _, ok := ts.Revision("nope"); ok {
		t.Error("Revision answers for a cluster that is not configured")
	}
}

// TestServeLastKnown: a kept state is built as live objects are, every
// check included; it is served, not synced, until the informers have
// listed everything, and then the live state replaces it in one step.
func TestServeLastKnown(t *testing.T) {
	ts := newTestStore(t)
	kept := Objects{
		Services: []*corev1.Service{webSvc(), newSvc("gone", []string{"10.96.0.11"}, webPorts), newSvc("outside", []string{"10.200.0.1"}, webPorts)},
		Slices: []*discoveryv1.EndpointSlice{
			webSlice("web-1", readyEP("10.0.0.1"), readyEP("127.0.0.1")),
			newSlice("gone", "gone-1", discoveryv1.AddressTypeIPv4, slicePorts, readyEP("10.0.0.5")),
			nil,
		},
	}
	if err := ts.ServeLastKnown("c1", kept, savedAt); err != nil {
		t.Fatal(err)
	}
	ts.expectChanges(t, 1, "kept state served")
	c := ts.cluster(t, "c1")
	if c.Synced || !c.LastKnown.Equal(savedAt) || !c.PortsKnown() {
		t.Errorf("synced %v, last known %v, ports known %v; want false, %v, true", c.Synced, c.LastKnown, c.PortsKnown(), savedAt)
	}
	// The same checks as a live object: loopback left out, a ClusterIP
	// outside service_cidrs refused.
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")
	checkEndpoints(t, ts.port(t, key("gone", "", TCP, false)), "10.0.0.5:8080")
	if len(c.Ports) != 2 {
		t.Errorf("ports %v, want web and gone", c.Ports)
	}
	if r := ts.Refusals(); len(r) != 2 {
		t.Errorf("refusals %+v, want web's loopback endpoint and outside", r)
	}
	if _, _, ok := ts.Export("c1"); ok {
		t.Error("a kept state is exported again")
	}
	if err := ts.ServeLastKnown("c1", kept, savedAt); err == nil {
		t.Error("a second kept state was taken")
	}

	// The informers list: nothing changes until they have it all.
	ts.UpsertService("c1", webSvc())
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.2")))
	ts.DeleteSlice("c1", webSlice("web-9"))
	ts.expectChanges(t, 0, "live objects while the kept state is served")
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")

	ts.SetSynced("c1")
	ts.expectChanges(t, 1, "synced")
	c = ts.cluster(t, "c1")
	if !c.Synced || !c.LastKnown.IsZero() {
		t.Errorf("after the sync: synced %v, last known %v", c.Synced, c.LastKnown)
	}
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.2:8080")
	if len(c.Ports) != 1 {
		t.Errorf("ports %v: the service deleted meanwhile is still there", c.Ports)
	}
	if r := ts.Refusals(); len(r) != 0 {
		t.Errorf("refusals of the kept state stay: %+v", r)
	}
	// From now on, events are applied as they come.
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.3")))
	ts.expectChanges(t, 1, "a live change")
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.3:8080")
	if _, _, ok := ts.Export("c1"); !ok {
		t.Error("the live state is not exported")
	}
}

// TestServeLastKnownRefused: only a cluster without objects of its own
// takes a kept state.
func TestServeLastKnownRefused(t *testing.T) {
	ts := newTestStore(t)
	if err := ts.ServeLastKnown("nope", Objects{}, savedAt); err == nil {
		t.Error("a cluster that is not configured took a kept state")
	}
	if err := ts.ServeLastKnown("c1", Objects{}, time.Time{}); err == nil {
		t.Error("a kept state without its time was taken")
	}
	ts.UpsertService("c1", webSvc())
	if err := ts.ServeLastKnown("c1", Objects{Services: []*corev1.Service{webSvc()}}, savedAt); err == nil {
		t.Error("a cluster with live objects took a kept state")
	}
	if c := ts.cluster(t, "c1"); !c.LastKnown.IsZero() {
		t.Error("a refused kept state is served")
	}
}

// TestServeLastKnownReload: a reload that restarts the cluster's watch
// drops the kept state with the rest of its objects; one that keeps it
// rebuilds the kept state under the new settings.
func TestServeLastKnownReload(t *testing.T) {
	ts := newTestStore(t)
	kept := Objects{Services: []*corev1.Service{webSvc()}, Slices: []*discoveryv1.EndpointSlice{webSlice("web-1", readyEP("10.0.0.1"), readyEP("10.1.0.1"))}}
	if err := ts.ServeLastKnown("c1", kept, savedAt); err != nil {
		t.Fatal(err)
	}
	cfg := testCfg
	cfg.EndpointCIDRs = append(cfg.EndpointCIDRs, netip.MustParsePrefix("10.1.0.0/16"))
	ts.SetClusters([]ClusterConfig{cfg})
	checkEndpoints(t, ts.port(t, webKey), "10.1.0.1:8080")
	if c := ts.cluster(t, "c1"); c.LastKnown.IsZero() {
		t.Error("a reload of the same source dropped the kept state")
	}
	cfg.Generation++
	ts.SetClusters([]ClusterConfig{cfg})
	if c := ts.cluster(t, "c1"); !c.LastKnown.IsZero() || len(c.Ports) != 0 || c.PortsKnown() {
		t.Errorf("a restarted watch kept the kept state: %+v", c)
	}
}

// TestServeLastKnownNodePort: a cluster reached through its nodes serves
// the kept node list, and the live state replaces the kept one only when
// both its objects and its nodes are listed.
func TestServeLastKnownNodePort(t *testing.T) {
	ts := newReachStore(t, reach.NodePort)
	svc := newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)}, withNodePort(30080))
	kept := Objects{Services: []*corev1.Service{svc}, Slices: []*discoveryv1.EndpointSlice{webSlice("web-1", readyEP("10.0.0.1"))}}
	if err := ts.ServeLastKnown("c1", kept, savedAt); err == nil {
		t.Error("a nodeport cluster took a kept state without nodes")
	}
	kept.Nodes, kept.NodesKnown = []NodeInfo{testNode("n1", true, "192.0.2.1")}, true
	if err := ts.ServeLastKnown("c1", kept, savedAt); err != nil {
		t.Fatal(err)
	}
	checkEndpoints(t, ts.port(t, webKey), "192.0.2.1:30080")
	if nodes, ok := ts.LastKnownNodes("c1"); !ok || len(nodes) != 1 {
		t.Errorf("LastKnownNodes %v, %v", nodes, ok)
	}
	ts.UpsertService("c1", svc)
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))
	ts.SetSynced("c1")
	if c := ts.cluster(t, "c1"); c.Synced || c.LastKnown.IsZero() {
		t.Error("the kept state was replaced before the node list arrived")
	}
	ts.changes = 0
	ts.SetNodes("c1", []NodeInfo{testNode("n2", true, "192.0.2.2")})
	ts.expectChanges(t, 1, "the node list completes the live state")
	if c := ts.cluster(t, "c1"); !c.Synced || !c.LastKnown.IsZero() {
		t.Error("not synced after the node list")
	}
	checkEndpoints(t, ts.port(t, webKey), "192.0.2.2:30080")
	if _, ok := ts.LastKnownNodes("c1"); ok {
		t.Error("LastKnownNodes answers after the sync")
	}
	objs, _, ok := ts.Export("c1")
	if !ok || !objs.NodesKnown || len(objs.Nodes) != 1 || objs.Nodes[0].Name != "n2" {
		t.Errorf("exported nodes %+v, %v", objs.Nodes, ok)
	}
}

// TestExportRoundTrip: what Export gives, served as a kept state in a new
// store, builds the same ports and refusals.
func TestExportRoundTrip(t *testing.T) {
	ts := newTestStore(t)
	for i := range 20 {
		name := fmt.Sprintf("s%02d", i)
		ts.UpsertService("c1", newSvc(name, []string{nthIP96(10 + i)}, webPorts, withAffinity(nil)))
		ts.UpsertSlice("c1", newSlice(name, name+"-a", discoveryv1.AddressTypeIPv4, slicePorts, readyEP(nthIP(i+1)), terminatingEP(nthIP(100+i), true), notReadyEP(nthIP(200+i))))
	}
	ts.UpsertSlice("c1", newSlice("s00", "s00-b", discoveryv1.AddressTypeIPv4, slicePorts, readyEP("169.254.169.254")))
	ts.SetSynced("c1")
	objs, _, _ := ts.Export("c1")

	again := newTestStore(t)
	if err := again.ServeLastKnown("c1", objs, savedAt); err != nil {
		t.Fatal(err)
	}
	want, got := ts.cluster(t, "c1").Ports, again.cluster(t, "c1").Ports
	if len(got) != len(want) {
		t.Fatalf("%d ports, want %d", len(got), len(want))
	}
	for k, p := range want {
		if !p.Equal(got[k]) {
			t.Errorf("%v: %s, want %s", k, fmtPort(got[k]), fmtPort(p))
		}
	}
	if w, g := fmt.Sprint(ts.Refusals()), fmt.Sprint(again.Refusals()); w != g {
		t.Errorf("refusals %s, want %s", g, w)
	}
}
