package cluster

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Fanout is a Sink that hands every event to each of its sinks in turn, so
// that more than the model (a DNS server) can follow a cluster through one
// set of informers: every sink sees the same events in the same order, and
// a slow one holds up the others. The objects are the informers' own, which
// no sink may change.
type Fanout []Sink

var _ Sink = Fanout(nil)

func (f Fanout) UpsertService(cluster string, svc *corev1.Service) {
	for _, s := range f {
		s.UpsertService(cluster, svc)
	}
}

func (f Fanout) DeleteService(cluster, namespace, name string) {
	for _, s := range f {
		s.DeleteService(cluster, namespace, name)
	}
}

func (f Fanout) UpsertSlice(cluster string, es *discoveryv1.EndpointSlice) {
	for _, s := range f {
		s.UpsertSlice(cluster, es)
	}
}

func (f Fanout) DeleteSlice(cluster string, es *discoveryv1.EndpointSlice) {
	for _, s := range f {
		s.DeleteSlice(cluster, es)
	}
}

func (f Fanout) SetSynced(cluster string) {
	for _, s := range f {
		s.SetSynced(cluster)
	}
}
