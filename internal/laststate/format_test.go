package laststate

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
)

var (
	now     = time.Date(2026, 11, 28, 3, 41, 45, 0, time.UTC)
	alphaID = IdentityOf(config.Cluster{
		Name: "alpha", Server: "https://10.250.0.10:6443", ContextName: "alpha",
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}, Reach: reach.Direct,
	})
)

func ptr[T any](v T) *T { return &v }

func svc(name, ip string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

func slice(svcName, name string, ips ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(8080))}},
	}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return es
}

func testState() State {
	return State{Identity: alphaID, SavedAt: now.Add(-time.Hour), Objects: model.Objects{
		Services: []*corev1.Service{svc("web", "10.96.0.10"), svc("api", "10.96.0.11")},
		Slices:   []*discoveryv1.EndpointSlice{slice("web", "web-1", "10.0.0.1", "10.0.0.2"), slice("api", "api-1", "10.0.0.3")},
	}}
}

func encoded(t *testing.T, st State) []byte {
	t.Helper()
	data, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRoundTrip(t *testing.T) {
	st := testState()
	got, err := Decode(encoded(t, st), alphaID, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SavedAt.Equal(st.SavedAt) || !reflect.DeepEqual(got.Identity, st.Identity) {
		t.Errorf("saved %v identity %+v, want %v %+v", got.SavedAt, got.Identity, st.SavedAt, st.Identity)
	}
	if len(got.Objects.Services) != 2 || len(got.Objects.Slices) != 2 || got.Objects.NodesKnown {
		t.Fatalf("objects %+v", got.Objects)
	}
	if s := got.Objects.Services[0]; s.Name != "web" || s.Spec.ClusterIP != "10.96.0.10" || !s.CreationTimestamp.Equal(ptr(metav1.NewTime(now.Add(-time.Hour)))) {
		t.Errorf("service %+v", s)
	}
	if es := got.Objects.Slices[0]; es.Name != "web-1" || len(es.Endpoints) != 2 || es.Endpoints[1].Addresses[0] != "10.0.0.2" || !*es.Endpoints[0].Conditions.Ready {
		t.Errorf("slice %+v", es)
	}
	// The same state, the same bytes: a file changes only with its content.
	if a, b := encoded(t, st), encoded(t, st); !bytes.Equal(a, b) {
		t.Error("two encodings of one state differ")
	}
}

func TestRoundTripNodes(t *testing.T) {
	st := testState()
	st.Identity.Reach = string(reach.NodePort)
	st.Objects.NodesKnown = true
	st.Objects.Nodes = []model.NodeInfo{{
		Name: "n1", Ready: true, Unschedulable: true,
		Addresses: []model.NodeAddr{{Type: reach.NodeInternalIP, Addr: netip.MustParseAddr("192.0.2.1")}, {Type: reach.NodeExternalIP, Addr: netip.MustParseAddr("2001:db8::1")}},
		PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
	}, {Name: "n2"}}
	got, err := Decode(encoded(t, st), st.Identity, time.Hour+time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Objects.NodesKnown || !reflect.DeepEqual(got.Objects.Nodes, st.Objects.Nodes) {
		t.Errorf("nodes %+v, want %+v", got.Objects.Nodes, st.Objects.Nodes)
	}
}

// TestUnusable: a file is used whole or not at all, and the reason names
// what is wrong.
func TestUnusable(t *testing.T) {
	good := encoded(t, testState())
	payloadAt := bytes.Index(good, []byte(`"payload":`)) + len(`"payload":`)
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x01
		return b
	}
	other := func(f func(*Identity)) []byte {
		st := testState()
		f(&st.Identity)
		return encoded(t, st)
	}
	saved := func(at time.Time) []byte {
		st := testState()
		st.SavedAt = at
		return encoded(t, st)
	}
	badNode := func(n model.NodeInfo) []byte {
		st := testState()
		st.Objects.NodesKnown, st.Objects.Nodes = true, []model.NodeInfo{n}
		return encoded(t, st)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "damaged, truncated, or not a state file"},
		{"truncated", good[:len(good)/2], "damaged, truncated, or not a state file"},
		{"truncated at the end", good[:len(good)-3], "damaged, truncated, or not a state file"},
		{"an address of the payload changed", flip(bytes.Index(good, []byte(`10.0.0.2`)) + 7), "checksum mismatch"},
		{"a byte of the payload flipped", flip(payloadAt + 100), "damaged, truncated, or not a state file"},
		{"a byte of the checksum flipped", flip(bytes.Index(good, []byte(`"sha256":"`)) + 12), "checksum mismatch"},
		{"another format", bytes.Replace(good, []byte(`{"format":1,`), []byte(`{"format":2,`), 1), "format version 2; this version of kube-outpost reads version 1"},
		{"no format", bytes.Replace(good, []byte(`{"format":1,`), []byte(`{`), 1), "format version 0"},
		{"not JSON", []byte("kube-outpost\x00\x01"), "damaged, truncated, or not a state file"},
		{"another cluster", other(func(id *Identity) { id.Cluster = "beta" }), `the state of cluster "beta", not of "alpha"`},
		{"another server", other(func(id *Identity) { id.Server = "https://10.250.0.99:6443" }), "another configuration of the cluster: server https://10.250.0.99:6443, configured now https://10.250.0.10:6443"},
		{"other service CIDRs", other(func(id *Identity) { id.ServiceCIDRs = []string{"10.97.0.0/16"} }), "service_cidrs [10.97.0.0/16], configured now [10.96.0.0/16]"},
		{"other namespaces", other(func(id *Identity) { id.Namespaces = []string{"prod"} }), "namespaces [prod], configured now []"},
		{"another selector", other(func(id *Identity) { id.ServiceSelector = "tier=web" }), `service_selector "tier=web", configured now ""`},
		{"another reach", other(func(id *Identity) { id.Reach = "nodeport" }), "reach nodeport, configured now direct"},
		{"another context", other(func(id *Identity) { id.Context = "old" }), "context old, configured now alpha"},
		{"too old", saved(now.Add(-25 * time.Hour)), "saved at 2026-11-27T02:41:45Z, 25h0m0s ago: older than stale_state_max_age 24h0m0s"},
		{"from the future", saved(now.Add(time.Hour)), "after this host's clock"},
		{"no time", saved(time.Time{}), "no time of saving"},
		{"node address type", badNode(model.NodeInfo{Name: "n1", Addresses: []model.NodeAddr{{Type: "Hostname", Addr: netip.MustParseAddr("192.0.2.1")}}}), `node "n1": address type "Hostname"`},
		{"node address with zone", badNode(model.NodeInfo{Name: "n1", Addresses: []model.NodeAddr{{Type: reach.NodeInternalIP, Addr: netip.MustParseAddr("fe80::1%eth0")}}}), `node "n1": address "fe80::1%eth0"`},
		{"node pod CIDR with host bits", badNode(model.NodeInfo{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24")}}), `node "n1": pod CIDR "10.244.1.1/24"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Decode(tc.data, alphaID, 24*time.Hour, now)
			var u *UnusableError
			if !errors.As(err, &u) {
				t.Fatalf("Decode: %v, want an UnusableError", err)
			}
			if !strings.Contains(u.Reason, tc.want) {
				t.Errorf("reason %q, want it to say %q", u.Reason, tc.want)
			}
			if !reflect.DeepEqual(st, State{}) {
				t.Errorf("an unusable file gave %+v", st)
			}
		})
	}
	// A little ahead is a clock that was a little ahead.
	if _, err := Decode(saved(now.Add(30*time.Second)), alphaID, 24*time.Hour, now); err != nil {
		t.Errorf("a file 30s ahead: %v", err)
	}
	// stale_state_max_age 0 uses none, not even one saved just now.
	if _, err := Decode(saved(now.Add(-time.Second)), alphaID, 0, now); err == nil {
		t.Error("max age 0 used a file")
	}
}

// TestSizeCap: a state past the cap is refused whole at writing, and a
// file past it is not read.
func TestSizeCap(t *testing.T) {
	defer func(old int) { maxBytes = old }(maxBytes)
	maxBytes = 4 << 10
	st := testState()
	for i := range 100 {
		st.Objects.Slices = append(st.Objects.Slices, slice("web", fmt.Sprintf("web-%d", i+2), "10.0.1.1", "10.0.1.2"))
	}
	_, err := Encode(st)
	var big *TooBigError
	if !errors.As(err, &big) || big.Cluster != "alpha" {
		t.Fatalf("Encode past the cap: %v", err)
	}
	maxBytes = MaxBytes
	data := encoded(t, st)
	maxBytes = 4 << 10
	var u *UnusableError
	if _, err := Decode(data, alphaID, 24*time.Hour, now); !errors.As(err, &u) || !strings.Contains(u.Reason, "more than a state file may have") {
		t.Errorf("Decode past the cap: %v", err)
	}
}
