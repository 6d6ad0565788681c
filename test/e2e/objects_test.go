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
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// port is a service port and the target port its endpoints listen on.
type port struct {
	name   string
	proto  corev1.Protocol
	port   int32
	target int32
	byName bool // targetPort refers to the port by name
}

// ep is one endpoint of a slice.
type ep struct {
	ip                          string
	ready, serving, terminating bool
}

func readyEP(ip string) ep { return ep{ip: ip, ready: true, serving: true} }

// namespace creates a fresh namespace in a cluster for one test.
func namespace(t *testing.T, c kubernetes.Interface, name string) string {
	t.Helper()
	ctx := context.Background()
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

// service creates a ClusterIP service and returns its ClusterIP.
func service(t *testing.T, c kubernetes.Interface, ns, name string, ports []port, mutate ...func(*corev1.Service)) netip.Addr {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	for _, p := range ports {
		sp := corev1.ServicePort{Name: p.name, Protocol: p.proto, Port: p.port, TargetPort: intstr.FromInt32(p.target)}
		if p.byName {
			sp.TargetPort = intstr.FromString(p.name)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	for _, m := range mutate {
		m(svc)
	}
	got, err := c.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating service %s/%s: %v", ns, name, err)
	}
	vip, _ := netip.ParseAddr(got.Spec.ClusterIP) // "None" for headless
	return vip
}

// slice creates or replaces the EndpointSlice <svc>-<suffix> of a service,
// of the address family of its endpoints;
// the tests play the EndpointSlice controller, which the lab does not run.
func slice(t *testing.T, c kubernetes.Interface, ns, svc, suffix string, ports []port, eps []ep, mutate ...func(*discoveryv1.EndpointSlice)) {
	t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: svc + "-" + suffix,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "kube-outpost-e2e"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	if len(eps) > 0 && netip.MustParseAddr(eps[0].ip).Is6() {
		es.AddressType = discoveryv1.AddressTypeIPv6
	}
	for _, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.name), Protocol: ptr.To(p.proto), Port: ptr.To(p.target)})
	}
	for _, e := range eps {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(e.ready), Serving: ptr.To(e.serving), Terminating: ptr.To(e.terminating),
			},
		})
	}
	for _, m := range mutate {
		m(es)
	}
	ctx := context.Background()
	api := c.DiscoveryV1().EndpointSlices(ns)
	old, err := api.Get(ctx, es.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, es, metav1.CreateOptions{})
	case err == nil:
		es.ResourceVersion = old.ResourceVersion
		_, err = api.Update(ctx, es, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("writing EndpointSlice %s/%s: %v", ns, es.Name, err)
	}
}

// hits sends n HTTP requests, each on a new connection, and counts the
// answering pods.
func hits(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		body, err := theLab.HTTPGet(ctx, url)
		cancel()
		if err != nil {
			t.Fatalf("request %d to %s: %v", i, url, err)
		}
		out[body]++
	}
	return out
}

func get(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return theLab.HTTPGet(ctx, url)
}

// answeredBy waits until url answers, then checks over n requests that
// exactly the pods named answer.
func answeredBy(t *testing.T, url string, n int, pods ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, p := range pods {
		want[p] = true
	}
	eventually(t, 20*time.Second, "answers from "+strings.Join(pods, ", ")+" at "+url, func() error {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			body, err := get(url)
			if err != nil {
				return err
			}
			got[body]++
		}
		for p := range want {
			if got[p] == 0 {
				return fmt.Errorf("%s never answered; answers: %v", p, got)
			}
		}
		for p := range got {
			if !want[p] {
				return fmt.Errorf("%s answered but should not; answers: %v", p, got)
			}
		}
		return nil
	})
}

// serviceCIDR adds a service range to a cluster (the ServiceCIDR API). The
// apiserver allocates from it at once; without a controller-manager it is
// never marked Ready, and never goes away, so tests that use it run last.
func serviceCIDR(t *testing.T, c kubernetes.Interface, name string, cidr netip.Prefix) {
	t.Helper()
	_, err := c.NetworkingV1().ServiceCIDRs().Create(context.Background(), &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       networkingv1.ServiceCIDRSpec{CIDRs: []string{cidr.String()}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func url(ip netip.Addr, port int) string {
	return fmt.Sprintf("http://%s/", netip.AddrPortFrom(ip, uint16(port)))
}
