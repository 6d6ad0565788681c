package laststate

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// What of an object the model reads (internal/model: build.go, limits.go,
// reach_store.go, named.go) and so what a file keeps. The rest would only take disk
// and time to read. TestTrimKeepsWhatTheModelReads builds the same ports
// from trimmed objects as from full ones.

// proxyLabels are the Service labels the model reads.
var proxyLabels = []string{"service.kubernetes.io/service-proxy-name", corev1.IsHeadlessService}

func trimService(s *corev1.Service) *corev1.Service {
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name,
			// Admission under the limits goes oldest first.
			CreationTimestamp: s.CreationTimestamp,
			Labels:            keep(s.Labels, proxyLabels...),
		},
		Spec: s.Spec,
	}
	// Which pods back the service is the EndpointSlices' business.
	out.Spec.Selector = nil
	for _, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ing.IP, IPMode: ing.IPMode})
		}
	}
	return out
}

func trimSlice(es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: es.Namespace, Name: es.Name,
			Labels: keep(es.Labels, discoveryv1.LabelServiceName),
			// No last-change-trigger-time: a kept state is no change
			// whose programming latency could be measured.
		},
		AddressType: es.AddressType,
		Ports:       es.Ports,
	}
	out.Endpoints = model.EndpointsRead(es.Endpoints)
	return out
}

func keep(labels map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := labels[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
