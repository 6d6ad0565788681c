package cluster

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// journal is a Sink that writes down what it is given.
type journal struct{ got []string }

func (j *journal) UpsertService(c string, svc *corev1.Service) {
	j.got = append(j.got, fmt.Sprintf("upsert service %s/%s/%s", c, svc.Namespace, svc.Name))
}
func (j *journal) DeleteService(c, ns, name string) {
	j.got = append(j.got, fmt.Sprintf("delete service %s/%s/%s", c, ns, name))
}
func (j *journal) UpsertSlice(c string, es *discoveryv1.EndpointSlice) {
	j.got = append(j.got, fmt.Sprintf("upsert slice %s/%s/%s", c, es.Namespace, es.Name))
}
func (j *journal) DeleteSlice(c string, es *discoveryv1.EndpointSlice) {
	j.got = append(j.got, fmt.Sprintf("delete slice %s/%s/%s", c, es.Namespace, es.Name))
}
func (j *journal) SetSynced(c string) { j.got = append(j.got, "synced "+c) }

// TestFanout: every sink gets every event, in order.
func TestFanout(t *testing.T) {
	a, b := &journal{}, &journal{}
	var f Sink = Fanout{a, b}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1"}}
	f.UpsertService("alpha", svc)
	f.UpsertSlice("alpha", es)
	f.SetSynced("alpha")
	f.DeleteSlice("alpha", es)
	f.DeleteService("alpha", "ns", "web")
	want := []string{
		"upsert service alpha/ns/web", "upsert slice alpha/ns/web-1", "synced alpha",
		"delete slice alpha/ns/web-1", "delete service alpha/ns/web",
	}
	for name, j := range map[string]*journal{"first": a, "second": b} {
		if !slices.Equal(j.got, want) {
			t.Errorf("%s sink got %q, want %q", name, j.got, want)
		}
	}
	Fanout(nil).SetSynced("alpha") // no sink: nothing to do, no panic
}
