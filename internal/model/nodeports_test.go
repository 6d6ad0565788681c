package model

import (
	"github.com/kube-outpost/kube-outpost/internal/config"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var (
	npX = ClusterConfig{Cluster: config.Cluster{Name: "x", ServiceCIDRs: prefixes("10.96.0.0/16", "fd00:96::/112"), ServeNodePorts: true}}
	npY = ClusterConfig{Cluster: config.Cluster{Name: "y", ServiceCIDRs: prefixes("10.97.0.0/16", "fd00:97::/112"), ServeNodePorts: true}}
	npZ = ClusterConfig{Cluster: config.Cluster{Name: "z", ServiceCIDRs: prefixes("10.98.0.0/16")}} // does not serve node ports
)

func newNodePortStore(t *testing.T) *testStore {
	t.Helper()
	ts := &testStore{log: &warnCounter{}}
	ts.Store = NewStore(slog.New(ts.log), func() { ts.changes++ })
	ts.SetClusters([]ClusterConfig{npX, npY, npZ})
	ts.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("127.0.0.1")})
	ts.changes = 0
	return ts
}

// npSvc is a NodePort service with one port per protocol given, all on
// nodePort np.
func npSvc(name string, ips []string, np int32, created int64, protos ...corev1.Protocol) *corev1.Service {
	if len(protos) == 0 {
		protos = []corev1.Protocol{corev1.ProtocolTCP}
	}
	var ports []corev1.ServicePort
	for _, p := range protos {
		sp := svcPort(strings.ToLower(string(p)), p, 80)
		sp.NodePort = np
		ports = append(ports, sp)
	}
	return newSvc(name, ips, ports, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }, createdAt(created))
}

func createdAt(sec int64) svcOpt { return created(sec) }

func npKey(cluster, name string, proto Protocol, v6 bool) PortKey {
	return PortKey{Cluster: cluster, Namespace: testNS, Name: name, Port: strings.ToLower(string(proto)), Protocol: proto, IPv6: v6}
}

func servedAt(t *testing.T, ts *testStore, k PortKey) uint16 {
	t.Helper()
	p := ts.port(t, k)
	if p == nil {
		t.Fatalf("port %v is not programmed", k)
	}
	return p.ServedNodePort
}

func refusalOf(ts *testStore, cluster, name string) string {
	for _, r := range ts.Refusals() {
		if r.Cluster == cluster && r.Namespace == testNS && r.Name == name {
			return r.Reason
		}
	}
	return ""
}

func reasonCount(ts *testStore, cluster string, r RefusalReason) uint64 {
	for _, c := range ts.RefusalCounts() {
		if c.Cluster == cluster && c.Reason == r {
			return c.Count
		}
	}
	return 0
}

// TestServedNodePorts: a cluster with serve_node_ports has its ports'
// node ports served; one without keeps NodePort (reach = nodeport needs
// it) but serves nothing. The snapshot carries the host's addresses and
// the setting.
func TestServedNodePorts(t *testing.T) {
	ts := newNodePortStore(t)
	ts.UpsertService("x", npSvc("web", []string{"10.96.0.10", "fd00:96::10"}, 30080, 100, corev1.ProtocolTCP, corev1.ProtocolUDP))
	ts.UpsertService("z", npSvc("web", []string{"10.98.0.10"}, 30080, 50))
	for _, k := range []PortKey{npKey("x", "web", TCP, false), npKey("x", "web", UDP, false), npKey("x", "web", TCP, true)} {
		if got := servedAt(t, ts, k); got != 30080 {
			t.Errorf("%v: ServedNodePort %d, want 30080 (TCP and UDP, IPv4 and IPv6 never collide)", k, got)
		}
	}
	z := ts.port(t, npKey("z", "web", TCP, false))
	if z.NodePort != 30080 || z.ServedNodePort != 0 {
		t.Errorf("cluster z without serve_node_ports: NodePort %d ServedNodePort %d, want 30080 and 0", z.NodePort, z.ServedNodePort)
	}
	if r := ts.Refusals(); len(r) != 0 {
		t.Errorf("refusals %+v, want none: a cluster that serves no node ports claims none", r)
	}
	st := ts.Snapshot()
	if want := []netip.Addr{netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("127.0.0.1")}; !slices.Equal(st.HostAddrs, want) {
		t.Errorf("State.HostAddrs %v, want %v", st.HostAddrs, want)
	}
	for _, c := range st.Clusters {
		if c.ServeNodePorts != (c.Name != "z") {
			t.Errorf("cluster %s: ServeNodePorts %v", c.Name, c.ServeNodePorts)
		}
	}
}

// TestNodePortConflictBetweenClusters: the same node port and protocol in
// two clusters that serve node ports: the cluster earlier in the config
// keeps it, however old the other cluster's service claims to be (its
// apiserver sets that); the other is refused with a problem naming both,
// counted as node_port_conflict; when the winner goes, the other one gets
// it, and the refusal goes. Inside one cluster the older service wins.
func TestNodePortConflictBetweenClusters(t *testing.T) {
	ts := newNodePortStore(t)
	// y's service is backdated far before x's: x, first in the config,
	// still wins.
	ts.UpsertService("y", npSvc("early", []string{"10.97.0.10"}, 30080, 1))
	ts.UpsertService("x", npSvc("late", []string{"10.96.0.10"}, 30080, 200))
	if got := servedAt(t, ts, npKey("x", "late", TCP, false)); got != 30080 {
		t.Errorf("the service of the cluster first in the config: ServedNodePort %d, want 30080", got)
	}
	early := ts.port(t, npKey("y", "early", TCP, false))
	if early.ServedNodePort != 0 || early.NodePort != 30080 || early.VIP().String() != "10.97.0.10" {
		t.Errorf("the backdated service: %+v, want its ClusterIP programmed and its node port not served", early)
	}
	want := `node port conflict: node port 30080/TCP of port "tcp"/TCP is already served on this host for cluster "x" service ns/late (port "tcp"/TCP)`
	if r := refusalOf(ts, "y", "early"); !strings.HasPrefix(r, want) {
		t.Errorf("refusal of y/early:\n got %q\nwant prefix %q", r, want)
	}
	if n := reasonCount(ts, "y", ReasonNodePortConflict); n != 1 {
		t.Errorf("node_port_conflict count %d, want 1 (counts: %+v)", n, ts.RefusalCounts())
	}
	// Inside one cluster, the older service wins, whatever the names.
	ts.UpsertService("x", npSvc("aaa-newer", []string{"10.96.0.12"}, 30080, 300))
	if servedAt(t, ts, npKey("x", "aaa-newer", TCP, false)) != 0 || servedAt(t, ts, npKey("x", "late", TCP, false)) != 30080 {
		t.Errorf("inside cluster x, the older service must keep the node port")
	}
	ts.UpsertService("x", npSvc("aaa-newer", []string{"10.96.0.12"}, 30080, 150))
	if servedAt(t, ts, npKey("x", "aaa-newer", TCP, false)) != 30080 || servedAt(t, ts, npKey("x", "late", TCP, false)) != 0 {
		t.Errorf("inside cluster x, a service made older takes the node port")
	}
	ts.DeleteService("x", testNS, "aaa-newer")
	if r := refusalOf(ts, "y", "early"); !strings.Contains(r, `cluster "x" service ns/late`) {
		t.Errorf("refusal of y/early %q does not name x's service", r)
	}
	// The winner goes: the other gets the port, and its refusal ends.
	ts.changes = 0
	ts.DeleteService("x", testNS, "late")
	if got := servedAt(t, ts, npKey("y", "early", TCP, false)); got != 30080 {
		t.Errorf("after the winner was deleted: ServedNodePort %d, want 30080", got)
	}
	if r := refusalOf(ts, "y", "early"); r != "" {
		t.Errorf("refusal of y/early %q after the conflict ended", r)
	}
	ts.expectChanges(t, 1, "deleting the winner")
	// Another port number: no conflict.
	ts.UpsertService("x", npSvc("other", []string{"10.96.0.11"}, 30081, 300))
	if servedAt(t, ts, npKey("x", "other", TCP, false)) != 30081 || len(ts.Refusals()) != 0 {
		t.Errorf("distinct node ports conflict: %+v", ts.Refusals())
	}
}

// TestNodePortLocalListener: a node port a local process listens on is not
// served, with a problem naming the port and the listener; loopback
// listeners do not count; the port is served again when the listener
// goes. Only the services concerned change.
func TestNodePortLocalListener(t *testing.T) {
	ts := newNodePortStore(t)
	ts.UpsertService("x", npSvc("web", []string{"10.96.0.10", "fd00:96::10"}, 30080, 100))
	ts.UpsertService("y", npSvc("api", []string{"10.97.0.10"}, 30090, 100, corev1.ProtocolUDP))
	ts.changes = 0

	ts.SetLocalListeners([]Listener{
		{Protocol: TCP, Addr: netip.MustParseAddrPort("127.0.0.1:30090")}, // loopback: no conflict
		{Protocol: TCP, Addr: netip.MustParseAddrPort("0.0.0.0:22")},      // no node port
	})
	ts.expectChanges(t, 0, "listeners that hold no served node port")

	ts.SetLocalListeners([]Listener{{Protocol: TCP, Addr: netip.MustParseAddrPort("[::]:30080")}})
	ts.expectChanges(t, 1, "a listener on a served node port")
	for _, v6 := range []bool{false, true} {
		if got := servedAt(t, ts, npKey("x", "web", TCP, v6)); got != 0 {
			t.Errorf("v6=%v: ServedNodePort %d with a local listener on it, want 0", v6, got)
		}
	}
	want := `node port in use: node port 30080/TCP of port "tcp"/TCP: a local process on this host listens on it ([::]:30080): not served`
	if r := refusalOf(ts, "x", "web"); !strings.HasPrefix(r, want) {
		t.Errorf("refusal:\n got %q\nwant prefix %q", r, want)
	}
	if n := reasonCount(ts, "x", ReasonNodePortInUse); n != 1 {
		t.Errorf("node_port_in_use count %d, want 1", n)
	}
	if got := servedAt(t, ts, npKey("y", "api", UDP, false)); got != 30090 {
		t.Errorf("y/api (UDP 30090): ServedNodePort %d, want 30090", got)
	}

	// A UDP socket on y's port: y refused; x stays refused.
	ts.SetLocalListeners([]Listener{
		{Protocol: TCP, Addr: netip.MustParseAddrPort("[::]:30080")},
		{Protocol: UDP, Addr: netip.MustParseAddrPort("10.250.0.2:30090")},
	})
	if got := servedAt(t, ts, npKey("y", "api", UDP, false)); got != 0 || !strings.Contains(refusalOf(ts, "y", "api"), "(10.250.0.2:30090)") {
		t.Errorf("y/api with a UDP socket on its node port: served %d, refusal %q", got, refusalOf(ts, "y", "api"))
	}

	ts.changes = 0
	ts.SetLocalListeners(nil)
	ts.expectChanges(t, 1, "the listeners went")
	if servedAt(t, ts, npKey("x", "web", TCP, false)) != 30080 || servedAt(t, ts, npKey("y", "api", UDP, false)) != 30090 || len(ts.Refusals()) != 0 {
		t.Errorf("after the listeners went: refusals %+v", ts.Refusals())
	}

	// A listener that is there before the service is refuses it at once.
	ts.SetLocalListeners([]Listener{{Protocol: TCP, Addr: netip.MustParseAddrPort("0.0.0.0:30100")}})
	ts.UpsertService("y", npSvc("new", []string{"10.97.0.20"}, 30100, 400))
	if got := servedAt(t, ts, npKey("y", "new", TCP, false)); got != 0 {
		t.Errorf("a service created on a held port: ServedNodePort %d, want 0", got)
	}
}

// TestNodePortsIncrementalEqualsRebuild: after node port claims came and
// went by events, the published state is what a rebuild from scratch
// makes.
func TestNodePortsIncrementalEqualsRebuild(t *testing.T) {
	ts := newNodePortStore(t)
	ts.UpsertService("x", npSvc("a", []string{"10.96.0.10"}, 30080, 100))
	ts.UpsertService("y", npSvc("b", []string{"10.97.0.10"}, 30080, 50))
	ts.SetLocalListeners([]Listener{{Protocol: UDP, Addr: netip.MustParseAddrPort("0.0.0.0:30080")}})
	ts.UpsertService("y", npSvc("c", []string{"10.97.0.11"}, 30081, 10, corev1.ProtocolUDP, corev1.ProtocolTCP))
	ts.UpsertService("x", npSvc("d", []string{"10.96.0.11"}, 30081, 20))
	ts.DeleteService("y", testNS, "b")
	ts.UpsertService("y", npSvc("b", []string{"10.97.0.10"}, 30080, 500))
	before := ts.Snapshot()
	beforeRefusals := ts.Refusals()

	ts.SetClusters([]ClusterConfig{npX, npY, npZ}) // rebuilds everything
	after := ts.Snapshot()
	for i := range before.Clusters {
		b, a := before.Clusters[i], after.Clusters[i]
		if len(b.Ports) != len(a.Ports) {
			t.Fatalf("cluster %s: %d ports, %d after a rebuild", b.Name, len(b.Ports), len(a.Ports))
		}
		for k, p := range b.Ports {
			if !p.Equal(a.Ports[k]) {
				t.Errorf("%v: %+v incrementally, %+v rebuilt", k, p, a.Ports[k])
			}
		}
	}
	if !reflect.DeepEqual(beforeRefusals, ts.Refusals()) {
		t.Errorf("refusals differ:\n%+v\n%+v", beforeRefusals, ts.Refusals())
	}
	// x, first in the config, holds 30080/TCP and 30081/TCP although y's
	// services are older; y/c keeps 30081/UDP, which nobody else claims.
	for k, want := range map[PortKey]uint16{
		npKey("x", "a", TCP, false): 30080, npKey("y", "b", TCP, false): 0,
		npKey("y", "c", TCP, false): 0, npKey("y", "c", UDP, false): 30081, npKey("x", "d", TCP, false): 30081,
	} {
		if got := servedAt(t, ts, k); got != want {
			t.Errorf("%v: ServedNodePort %d, want %d", k, got, want)
		}
	}
}

func TestNodePortAddrs(t *testing.T) {
	var in []netip.Addr
	for _, s := range []string{"127.0.0.1", "10.250.0.2", "169.254.3.4", "::1", "fe80::1", "fd00::2", "192.168.1.1", "10.250.0.2", "::ffff:10.1.1.1"} {
		in = append(in, netip.MustParseAddr(s))
	}
	if got, want := NodePortAddrs(in, false), []netip.Addr{netip.MustParseAddr("10.1.1.1"), netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("192.168.1.1")}; !slices.Equal(got, want) {
		t.Errorf("IPv4: %v, want %v", got, want)
	}
	if got, want := NodePortAddrs(in, true), []netip.Addr{netip.MustParseAddr("fd00::2")}; !slices.Equal(got, want) {
		t.Errorf("IPv6: %v, want %v", got, want)
	}
}
