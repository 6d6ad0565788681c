package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

const triggerAnnotation = corev1.EndpointsLastChangeTriggerTime

func TestStrip(t *testing.T) {
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name:          "web",
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}", triggerAnnotation: "2026-03-01T12:00:00Z"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		}
	}
	svc := &corev1.Service{ObjectMeta: meta()}
	if _, err := strip(svc); err != nil {
		t.Fatal(err)
	}
	if svc.Annotations != nil || svc.ManagedFields != nil {
		t.Errorf("service keeps %v and %v", svc.Annotations, svc.ManagedFields)
	}
	es := &discoveryv1.EndpointSlice{ObjectMeta: meta()}
	if _, err := strip(es); err != nil {
		t.Fatal(err)
	}
	if len(es.Annotations) != 1 || es.Annotations[triggerAnnotation] != "2026-03-01T12:00:00Z" || es.ManagedFields != nil {
		t.Errorf("slice keeps %v and %v, want only its trigger time", es.Annotations, es.ManagedFields)
	}
	bare := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"a": "b"}}}
	if _, err := strip(bare); err != nil {
		t.Fatal(err)
	}
	if bare.Annotations != nil {
		t.Errorf("slice without a trigger time keeps %v", bare.Annotations)
	}

	// Endpoints keep what the model reads, in a slice of their number.
	yes, node, host, zone := true, "n1", "h1", "z1"
	full := discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes},
		NodeName: &node, Hostname: &host, Zone: &zone, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"},
		Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}}}
	eps := make([]discoveryv1.Endpoint, 0, 16)
	for range 10 {
		eps = append(eps, full)
	}
	es = &discoveryv1.EndpointSlice{Endpoints: eps, ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
		discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io", "app": "web"}}}
	if _, err := strip(es); err != nil {
		t.Fatal(err)
	}
	want := discoveryv1.Endpoint{Addresses: full.Addresses, Conditions: full.Conditions, NodeName: &node, Hostname: &host}
	if len(es.Endpoints) != 10 || cap(es.Endpoints) != 10 || !reflect.DeepEqual(es.Endpoints[9], want) {
		t.Errorf("endpoints after strip: len %d cap %d, last %+v; want 10, 10, %+v", len(es.Endpoints), cap(es.Endpoints), es.Endpoints[9], want)
	}
	if !reflect.DeepEqual(es.Labels, map[string]string{discoveryv1.LabelServiceName: "web"}) {
		t.Errorf("labels after strip: %v, want only the service's name", es.Labels)
	}
}

// roundTripper answers with a status code, or fails.
type roundTripper struct {
	code int
	err  error
}

func (rt roundTripper) RoundTrip(*http.Request) (*http.Response, error) {
	if rt.err != nil {
		return nil, rt.err
	}
	return &http.Response{StatusCode: rt.code, Body: http.NoBody}, nil
}

// once sends a request through a link of w's once, as the link does
// before it holds a request that was not answered.
func once(w *Watcher, rt http.RoundTripper, req *http.Request) (*http.Response, bool, error) {
	return newLink(rt, "", w, w.log).attempt(req, false)
}

func TestConnected(t *testing.T) {
	w, err := newWatcher(config.Cluster{Name: "c"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	request := func(path string, rt roundTripper) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://apiserver"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := once(w, rt, req)
		if err == nil {
			resp.Body.Close()
		}
	}
	check := func(what string, want bool) {
		t.Helper()
		if got := w.Status().Connected; got != want {
			t.Errorf("%s: Connected = %v, want %v", what, got, want)
		}
	}
	const svcs, slices = "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices"

	check("before any request", false)
	request(svcs, roundTripper{code: 200})
	check("only services answered", false)
	request(slices, roundTripper{code: 200})
	check("both answered", true)
	request("/api/v1/namespaces", roundTripper{code: 500})
	check("after a failure of another resource", true)
	request(slices, roundTripper{code: http.StatusGone})
	check("after an expired resource version", true)
	request(svcs, roundTripper{err: errors.New("connection refused")})
	check("services refused", false)
	request(svcs, roundTripper{code: 200})
	check("services back", true)
	request(slices, roundTripper{code: http.StatusForbidden})
	check("slices forbidden", false)
	request(slices, roundTripper{code: 200})
	check("slices back", true)

	// A failure the informer reports after the request was answered, such
	// as a stream that breaks.
	errorsNow := func(what string, want int) {
		t.Helper()
		if n := w.Status().WatchErrors; n != want {
			t.Errorf("%s: WatchErrors = %d, want %d", what, n, want)
		}
	}
	// The refused and forbidden requests above; not the other resource's.
	errorsNow("after failed requests", 2)
	w.watchError(context.Background(), feed{resEndpointSlices, ""}, io.ErrUnexpectedEOF)
	check("after a broken watch", false)
	errorsNow("after a broken watch", 3)
	request(slices, roundTripper{code: 200})
	check("after the watch resumed", true)
	// A failed list is reported by the informer too: one failure.
	request(slices, roundTripper{code: 503})
	w.watchError(context.Background(), feed{resEndpointSlices, ""}, apierrors.NewServiceUnavailable("down"))
	errorsNow("after a failed list", 4)
	request(slices, roundTripper{code: 200})
	// Requests we cancel, stopping the watch, are not the apiserver's
	// failures.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://apiserver"+svcs, nil)
	once(w, roundTripper{err: context.Canceled}, req)
	check("after a cancelled request", true)
	errorsNow("after a cancelled request", 4)
	// The routine ends of a watch are no errors.
	w.watchError(context.Background(), feed{resServices, ""}, io.EOF)
	w.watchError(context.Background(), feed{resServices, ""}, apierrors.NewResourceExpired("too old resource version"))
	//lint:ignore SA1019 a bare 410 Gone is still what some apiservers send; the watcher must treat it as routine
	w.watchError(context.Background(), feed{resServices, ""}, apierrors.NewGone("gone"))
	check("after routine watch ends", true)
	errorsNow("after routine watch ends", 4)
}

// fakeAPIServer answers lists and watches of Services and EndpointSlices
// with fixed objects, like an apiserver with no changes, until it is told
// to fail.
type fakeAPIServer struct {
	failing atomic.Bool
	// lists counts lists, and watches that start with every object;
	// rewatches the watches that start from a resource version.
	lists, rewatches atomic.Int32
	mu               sync.Mutex
	stop             chan struct{} // closed to end the open watches
	svcs             []corev1.Service
	slices           []discoveryv1.EndpointSlice
}

// fail makes the server refuse every request and ends the open watches;
// recover makes it answer again.
func (f *fakeAPIServer) fail() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing.Store(true)
	close(f.stop)
	f.stop = make(chan struct{})
}

func (f *fakeAPIServer) recover() { f.failing.Store(false) }

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.failing.Load() {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":503}`, http.StatusServiceUnavailable)
		return
	}
	var kind, apiVersion string
	var items []any
	switch r.URL.Path {
	case "/api/v1/services":
		kind, apiVersion = "Service", "v1"
		for _, svc := range f.svcs {
			items = append(items, svc)
		}
	case "/apis/discovery.k8s.io/v1/endpointslices":
		kind, apiVersion = "EndpointSlice", "discovery.k8s.io/v1"
		for _, es := range f.slices {
			items = append(items, es)
		}
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	q := r.URL.Query()
	if q.Get("watch") == "true" && q.Get("sendInitialEvents") != "true" {
		f.rewatches.Add(1)
	} else {
		f.lists.Add(1)
	}
	if q.Get("watch") != "true" {
		json.NewEncoder(w).Encode(map[string]any{
			"kind": kind + "List", "apiVersion": apiVersion,
			"metadata": map[string]string{"resourceVersion": "10"}, "items": items,
		})
		return
	}
	enc := json.NewEncoder(w)
	if q.Get("sendInitialEvents") == "true" {
		for _, it := range items {
			enc.Encode(map[string]any{"type": "ADDED", "object": it})
		}
		enc.Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{
			"kind": kind, "apiVersion": apiVersion,
			"metadata": map[string]any{"resourceVersion": "10", "annotations": map[string]string{"k8s.io/initial-events-end": "true"}},
		}})
	}
	w.(http.Flusher).Flush()
	f.mu.Lock()
	stop := f.stop
	f.mu.Unlock()
	select {
	case <-r.Context().Done():
	case <-stop:
	}
}

// sink records what a watcher delivers.
type sink struct {
	mu     sync.Mutex
	slices map[string]*discoveryv1.EndpointSlice
	synced bool
}

func (s *sink) UpsertService(string, *corev1.Service)          {}
func (s *sink) DeleteService(string, string, string)           {}
func (s *sink) DeleteSlice(string, *discoveryv1.EndpointSlice) {}
func (s *sink) UpsertSlice(_ string, es *discoveryv1.EndpointSlice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slices[es.Name] = es
}
func (s *sink) SetSynced(string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = true
}

// waitFor polls cond; the limit is only there to end a broken test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never %s", what)
		}
	}
}

// watcherOf makes a watcher of a cluster whose apiserver is at url.
func watcherOf(t *testing.T, url string, s Sink) *Watcher {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	data := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: %q}\n"+
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n", url)
	if err := os.WriteFile(kc, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := New(config.Cluster{Name: "c", Kubeconfig: kc, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}},
		s, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestWatcherAgainstAPIServer runs a watcher against a fake apiserver: the
// slice reaches the sink with its trigger time, the cluster syncs, and
// Connected follows the apiserver going away and coming back.
func TestWatcherAgainstAPIServer(t *testing.T) {
	api := &fakeAPIServer{stop: make(chan struct{})}
	// Only a selected service's slices are passed on.
	api.svcs = []corev1.Service{{
		TypeMeta:   metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "8"},
	}}
	api.slices = []discoveryv1.EndpointSlice{{
		TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: "web-1", ResourceVersion: "9",
			Labels:      map[string]string{discoveryv1.LabelServiceName: "web"},
			Annotations: map[string]string{triggerAnnotation: "2026-03-01T12:00:00Z", "other": "dropped"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()

	s := &sink{slices: map[string]*discoveryv1.EndpointSlice{}}
	w := watcherOf(t, srv.URL, s)
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Stopped before the server closes, which waits for the open watches.
	defer w.Stop()

	waitFor(t, "synced and connected", func() bool { st := w.Status(); return st.Synced && st.Connected })
	s.mu.Lock()
	es := s.slices["web-1"]
	synced := s.synced
	s.mu.Unlock()
	if !synced {
		t.Error("the sink was not told the cluster synced")
	}
	if es == nil || len(es.Annotations) != 1 || es.Annotations[triggerAnnotation] != "2026-03-01T12:00:00Z" {
		t.Fatalf("slice delivered as %+v, want it with its trigger time only", es)
	}

	// The apiserver fails: the watches end, and the requests that follow
	// are refused.
	api.fail()
	waitFor(t, "disconnected", func() bool { return !w.Status().Connected })
	if n := w.Status().WatchErrors; n == 0 {
		t.Error("no watch error counted for an apiserver that fails every request")
	}
	if !w.Status().Synced {
		t.Error("an outage made the cluster unsynced: its rules would be left alone for nothing")
	}
	api.recover()
	waitFor(t, "connected again", func() bool { return w.Status().Connected })
}
