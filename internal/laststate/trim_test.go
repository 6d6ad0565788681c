package laststate

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// richObjects are a cluster's objects with every field the model reads set
// one way or another, and fields it does not read besides.
func richObjects() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	junk := func(m *metav1.ObjectMeta) {
		m.Annotations = map[string]string{"a": "b", corev1.EndpointsLastChangeTriggerTime: now.Format(time.RFC3339Nano)}
		m.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
		m.UID, m.ResourceVersion = "uid", "42"
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels["app"] = "web"
	}
	local, proxyMode := corev1.ServiceInternalTrafficPolicyLocal, corev1.LoadBalancerIPModeProxy
	for i, mod := range []func(*corev1.Service){
		func(s *corev1.Service) {},
		func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(600))}}
		},
		func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.10", "198.51.100.1"} },
		func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.11"}, {IP: "192.0.2.12", IPMode: &proxyMode}, {Hostname: "lb.example"}}
		},
		func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &local },
		func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort; s.Spec.Ports[0].NodePort = 30081 },
		func(s *corev1.Service) { s.Spec.ClusterIP = "10.200.0.1"; s.Spec.ClusterIPs = []string{"10.200.0.1"} },
		func(s *corev1.Service) { s.Spec.Ports = append(s.Spec.Ports, s.Spec.Ports[0]) },
		func(s *corev1.Service) {
			s.Spec.Selector = map[string]string{"app": "web"}
			s.CreationTimestamp = metav1.NewTime(now)
		},
		// Names only (the DNS server's): their endpoints' hostnames too.
		func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
		},
		func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "db.example.com"
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.Ports = "", nil, nil
		},
	} {
		name := fmt.Sprintf("s%d", i)
		s := svc(name, fmt.Sprintf("10.96.0.%d", 10+i))
		junk(&s.ObjectMeta)
		mod(s)
		svcs = append(svcs, s)
		es := slice(name, name+"-1", "10.0.0.1", fmt.Sprintf("10.0.1.%d", i), "127.0.0.1")
		junk(&es.ObjectMeta)
		es.Endpoints = append(es.Endpoints,
			discoveryv1.Endpoint{Addresses: []string{"10.0.2.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}},
			discoveryv1.Endpoint{Addresses: []string{"10.0.2.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}})
		for j := range es.Endpoints {
			e := &es.Endpoints[j]
			e.NodeName = ptr(fmt.Sprintf("n%d", j%2+1))
			e.Hostname, e.Zone = ptr("pod"), ptr("zone-a")
			e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "pod"}
			e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}}
		}
		slices = append(slices, es)
	}
	return svcs, slices
}

// TestTrimKeepsWhatTheModelReads: what a file keeps of the objects builds
// the same ports and refusals as the objects themselves. A field the model
// starts to read and trim.go drops fails here.
func TestTrimKeepsWhatTheModelReads(t *testing.T) {
	for _, kind := range []reach.Kind{reach.Direct, reach.NodePort} {
		t.Run(string(kind), func(t *testing.T) {
			cc := model.ClusterConfig{Cluster: config.Cluster{
				Name: "alpha", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
				AllowExternalIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, ServeNodePorts: true,
				Reach: kind, NodeAddressTypes: []string{reach.NodeInternalIP},
			}}
			nodes := []model.NodeInfo{
				{Name: "n1", Ready: true, Addresses: []model.NodeAddr{{Type: reach.NodeInternalIP, Addr: netip.MustParseAddr("172.16.0.1")}}},
				{Name: "n2", Ready: true, Addresses: []model.NodeAddr{{Type: reach.NodeInternalIP, Addr: netip.MustParseAddr("172.16.0.2")}}},
			}
			live := model.NewStore(nil, nil)
			live.SetClusters([]model.ClusterConfig{cc})
			svcs, slices := richObjects()
			for _, es := range slices {
				live.UpsertSlice("alpha", es)
			}
			for _, s := range svcs {
				live.UpsertService("alpha", s)
			}
			live.SetNodes("alpha", nodes)
			live.SetSynced("alpha")
			objs, _, ok := live.Export("alpha")
			if !ok {
				t.Fatal("nothing to export")
			}
			id := IdentityOf(cc.Cluster)
			st, err := Decode(encoded(t, State{Identity: id, SavedAt: now, Objects: objs}), id, time.Hour, now)
			if err != nil {
				t.Fatal(err)
			}
			kept := model.NewStore(nil, nil)
			kept.SetClusters([]model.ClusterConfig{cc})
			if err := kept.ServeLastKnown("alpha", st.Objects, st.SavedAt); err != nil {
				t.Fatal(err)
			}
			want, got := live.Snapshot().Clusters[0].Ports, kept.Snapshot().Clusters[0].Ports
			if len(want) < 8 || len(got) != len(want) {
				t.Fatalf("%d ports from the file, %d from the objects", len(got), len(want))
			}
			for k, p := range want {
				if !p.Equal(got[k]) {
					t.Errorf("%v from the file:\n%+v\nfrom the objects:\n%+v", k, got[k], p)
				}
			}
			wantNames, gotNames := live.Snapshot().Clusters[0].Names, kept.Snapshot().Clusters[0].Names
			if len(wantNames) != 2 || len(gotNames) != len(wantNames) {
				t.Fatalf("%d named services from the file, %d from the objects", len(gotNames), len(wantNames))
			}
			for k, n := range wantNames {
				if !n.Equal(gotNames[k]) {
					t.Errorf("%v from the file:\n%+v\nfrom the objects:\n%+v", k, gotNames[k], n)
				}
			}
			if w, g := fmt.Sprint(live.Refusals()), fmt.Sprint(kept.Refusals()); w != g {
				t.Errorf("refusals from the file:\n%s\nfrom the objects:\n%s", g, w)
			}
		})
	}
}
