//go:build vm

package vm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The VM tests' namespace in the cluster "prod".
const testNS = "vmtest"

// A hostStep is what the guest asks this process to do between two of its
// own checks, where only the host can: change the lab cluster's objects,
// stop or start its apiserver. run.sh's `host_step NAME` POSTs to
// $CONTROL/step/NAME (stepServer, reached at 10.0.2.2 through QEMU's user
// networking) and waits for the answer: the step's output, NAME=value lines
// the guest evaluates, or its error with a failing status.
type hostStep func(ctx context.Context) (string, error)

// serveSteps serves steps to the guest until the test ends, and returns the
// vmtest.env line that tells the guest where.
func (w *world) serveSteps(t *testing.T, steps map[string]hostStep) string {
	t.Helper()
	ln, err := w.lab.ListenHost("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /step/{name}", func(rw http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		step, ok := steps[name]
		if !ok {
			http.Error(rw, "no such step", http.StatusNotFound)
			return
		}
		begin := time.Now()
		out, err := step(r.Context())
		took := time.Since(begin).Round(10 * time.Millisecond)
		if err != nil {
			t.Logf("host step %s failed after %s: %v", name, took, err)
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		t.Logf("host step %s done in %s: %s", name, took, strings.TrimSpace(out))
		io.WriteString(rw, out)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("CONTROL=http://10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port)
}

// service creates a TCP Service name:svcPort in testNS and, unless pods is
// empty, its EndpointSlice with the pods as ready endpoints; it returns the
// ClusterIP.
func (w *world) service(ctx context.Context, name string, pods ...*lab.Pod) (netip.Addr, error) {
	svc, err := w.cluster.Admin.CoreV1().Services(testNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: svcPort, TargetPort: intstr.FromInt32(podPort)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("service %s: ClusterIP %q: %w", name, svc.Spec.ClusterIP, err)
	}
	if len(pods) == 0 {
		return ip, nil
	}
	_, err = w.cluster.Admin.DiscoveryV1().EndpointSlices(testNS).Create(ctx, endpointSlice(name, pods), metav1.CreateOptions{})
	return ip, err
}

// setEndpoints replaces the endpoints of a Service made by service.
func (w *world) setEndpoints(ctx context.Context, name string, pods ...*lab.Pod) error {
	_, err := w.cluster.Admin.DiscoveryV1().EndpointSlices(testNS).Update(ctx, endpointSlice(name, pods), metav1.UpdateOptions{})
	return err
}

// deleteService deletes a Service made by service, and its EndpointSlice.
func (w *world) deleteService(ctx context.Context, name string) error {
	err := w.cluster.Admin.CoreV1().Services(testNS).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil {
		return err
	}
	err = w.cluster.Admin.DiscoveryV1().EndpointSlices(testNS).Delete(ctx, name+"-1", metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// endpointSlice is the one EndpointSlice, "<service>-1", of a Service made by
// service.
func endpointSlice(service string, pods []*lab.Pod) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS, Name: service + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: "kube-outpost-vmtest"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(podPort))}},
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return es
}
