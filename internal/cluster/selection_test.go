package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

func TestScope(t *testing.T) {
	const proxy = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
	for _, c := range []struct {
		name                   string
		cluster                config.Cluster
		namespaces             []string
		fields, services, want string
		feeds                  []feed
	}{
		{
			name:       "everything",
			namespaces: []string{""},
			services:   proxy,
			feeds:      []feed{{"services", ""}, {"endpointslices", ""}},
		},
		{
			name:       "namespaces",
			cluster:    config.Cluster{Namespaces: []string{"shop", "billing"}},
			namespaces: []string{"shop", "billing"},
			services:   proxy,
			feeds: []feed{{"services", "shop"}, {"endpointslices", "shop"},
				{"services", "billing"}, {"endpointslices", "billing"}},
		},
		{
			name:       "excluded namespaces",
			cluster:    config.Cluster{ExcludeNamespaces: []string{"kube-system", "dev"}},
			namespaces: []string{""},
			fields:     "metadata.namespace!=kube-system,metadata.namespace!=dev",
			services:   proxy,
			feeds:      []feed{{"services", ""}, {"endpointslices", ""}},
		},
		{
			name:       "service selector",
			cluster:    config.Cluster{ServiceSelector: "expose=outside,tier in (web, api)"},
			namespaces: []string{""},
			services:   "expose=outside," + proxy + ",tier in (api,web)",
			feeds:      []feed{{"services", ""}, {"endpointslices", ""}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cluster.Name = "c"
			s, err := newScope(c.cluster)
			if err != nil {
				t.Fatal(err)
			}
			// Headless services' slices are taken: the DNS server names
			// their endpoints.
			const slicesSel = "!service.kubernetes.io/service-proxy-name"
			if !slices.Equal(s.namespaces, c.namespaces) || s.fields != c.fields || s.services != c.services || s.slices != slicesSel {
				t.Errorf("scope %+v, want namespaces %q, fields %q, services %q, slices %q", s, c.namespaces, c.fields, c.services, slicesSel)
			}
			if got := s.feeds(); !slices.Equal(got, c.feeds) {
				t.Errorf("feeds %v, want %v", got, c.feeds)
			}
		})
	}
	if _, err := newScope(config.Cluster{Name: "c", ServiceSelector: "a in (b"}); err == nil {
		t.Error("a broken service_selector was taken")
	}
}

func TestFeedOf(t *testing.T) {
	for path, want := range map[string]feed{
		"/api/v1/services":                                      {"services", ""},
		"/api/v1/namespaces/shop/services":                      {"services", "shop"},
		"/apis/discovery.k8s.io/v1/endpointslices":              {"endpointslices", ""},
		"/apis/discovery.k8s.io/v1/namespaces/a/endpointslices": {"endpointslices", "a"},
		// An apiserver behind a proxy's path.
		"/k8s/clusters/c-1/api/v1/namespaces/shop/services": {"services", "shop"},
		"/api/v1/namespaces": {"namespaces", ""},
	} {
		if got := feedOf(path); got != want {
			t.Errorf("feedOf(%q) = %v, want %v", path, got, want)
		}
	}
}

// With namespaces, every namespace's two feeds must answer for the cluster
// to count as connected: one forbidden namespace is enough to lose its
// changes.
func TestConnectedNamespaces(t *testing.T) {
	w, err := newWatcher(config.Cluster{Name: "c", Namespaces: []string{"a", "b"}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	request := func(path string, code int) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://apiserver"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, _, err := once(w, roundTripper{code: code}, req); err == nil {
			resp.Body.Close()
		}
	}
	check := func(what string, want bool) {
		t.Helper()
		if got := w.Status().Connected; got != want {
			t.Errorf("%s: Connected = %v, want %v", what, got, want)
		}
	}
	const core, disco = "/api/v1/namespaces/", "/apis/discovery.k8s.io/v1/namespaces/"
	request(core+"a/services", 200)
	request(disco+"a/endpointslices", 200)
	check("only namespace a answered", false)
	request(core+"b/services", 200)
	request(disco+"b/endpointslices", 403)
	check("slices of namespace b forbidden", false)
	// Answers for what this watcher does not watch say nothing about it.
	request("/apis/discovery.k8s.io/v1/endpointslices", 200)
	request(disco+"c/endpointslices", 200)
	check("slices of other namespaces answered", false)
	request(disco+"b/endpointslices", 200)
	check("every feed answered", true)
	request(core+"c/services", 500)
	check("a failure in a namespace not watched", true)
	if n := w.Status().WatchErrors; n != 1 {
		t.Errorf("WatchErrors = %d, want 1 (the forbidden list only)", n)
	}
	request(core+"a/services", 503)
	check("services of namespace a failing", false)
}

// recorder is a Sink that keeps what it holds, like the model, and the
// order of the changes.
type recorder struct {
	mu     sync.Mutex
	svcs   map[string]*corev1.Service
	slices map[string]*discoveryv1.EndpointSlice
	events []string
	synced bool
}

func newRecorder() *recorder {
	return &recorder{svcs: map[string]*corev1.Service{}, slices: map[string]*discoveryv1.EndpointSlice{}}
}

func (r *recorder) UpsertService(_ string, svc *corev1.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.svcs[svc.Namespace+"/"+svc.Name] = svc
	r.events = append(r.events, "service "+svc.Namespace+"/"+svc.Name)
}

func (r *recorder) DeleteService(_, namespace, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.svcs, namespace+"/"+name)
}

func (r *recorder) UpsertSlice(_ string, es *discoveryv1.EndpointSlice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slices[es.Namespace+"/"+es.Name] = es
	r.events = append(r.events, "slice "+es.Namespace+"/"+es.Name)
}

func (r *recorder) DeleteSlice(_ string, es *discoveryv1.EndpointSlice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.slices, es.Namespace+"/"+es.Name)
}

func (r *recorder) SetSynced(string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced = true
}

// holds says what the recorder holds: sorted keys of services and slices.
func (r *recorder) holds() (svcs, slices []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.svcs {
		svcs = append(svcs, k)
	}
	for k := range r.slices {
		slices = append(slices, k)
	}
	sort.Strings(svcs)
	sort.Strings(slices)
	return svcs, slices
}

func (r *recorder) waitHolds(t *testing.T, svcs, slices []string) {
	t.Helper()
	var gotSvcs, gotSlices []string
	waitFor(t, fmt.Sprintf("services %v and slices %v held", svcs, slices), func() bool {
		gotSvcs, gotSlices = r.holds()
		return fmt.Sprint(gotSvcs) == fmt.Sprint(svcs) && fmt.Sprint(gotSlices) == fmt.Sprint(slices)
	})
}

func (r *recorder) isSynced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

func testService(ns, name string, lbls map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
}

func testSlice(ns, svc, name string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
}

// selectingWatches makes the fake clientset's watches honour label
// selectors as the apiserver does, which the fake does for lists only: a
// change that makes an object stop matching reaches the watch as a delete,
// one that makes it match as a change the informer takes for an add. (The
// apiserver sends nothing for changes of an object that matched neither
// before nor after; this sends a delete, which the watcher must take as
// well.)
func selectingWatches(c *fake.Clientset) {
	c.PrependWatchReactor("*", func(a clienttesting.Action) (bool, watch.Interface, error) {
		wa := a.(clienttesting.WatchActionImpl)
		wi, err := c.Tracker().Watch(wa.GetResource(), wa.GetNamespace(), wa.ListOptions)
		if err != nil {
			return true, nil, err
		}
		sel := wa.GetWatchRestrictions().Labels
		return true, watch.Filter(wi, func(e watch.Event) (watch.Event, bool) {
			m, err := meta.Accessor(e.Object)
			if err != nil || sel.Matches(labels.Set(m.GetLabels())) {
				return e, true
			}
			if e.Type == watch.Modified {
				e.Type = watch.Deleted
				return e, true
			}
			return e, false
		}), nil
	})
}

// startFake runs a watcher for cluster c against a fake clientset.
func startFake(t *testing.T, c config.Cluster, client *fake.Clientset) *recorder {
	t.Helper()
	rec := newRecorder()
	c.Name = "c"
	w, err := newWatcher(c, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w.client = client
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return rec
}

// TestWatchNamespaces: with namespaces, every list and watch is of one of
// them, so a Role in each is enough and nothing of other namespaces is
// held; the cluster syncs once every namespace has listed.
func TestWatchNamespaces(t *testing.T) {
	var objs []runtime.Object
	for _, ns := range []string{"a", "b", "c"} {
		objs = append(objs, testService(ns, "web", nil), testSlice(ns, "web", "web-1"))
	}
	client := fake.NewClientset(objs...)
	// Namespace b's services cannot be listed until it is allowed: the
	// cluster must not count as synced without them.
	var forbidden atomic.Bool
	forbidden.Store(true)
	client.PrependReactor("list", "services", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "b" && forbidden.Load() {
			return true, nil, errors.New("forbidden")
		}
		return false, nil, nil
	})
	rec := startFake(t, config.Cluster{Namespaces: []string{"a", "b"}}, client)

	rec.waitHolds(t, []string{"a/web"}, []string{"a/web-1"})
	if rec.isSynced() {
		t.Fatal("synced before namespace b's services were listed")
	}
	forbidden.Store(false)
	rec.waitHolds(t, []string{"a/web", "b/web"}, []string{"a/web-1", "b/web-1"})
	waitFor(t, "synced", rec.isSynced)

	for _, a := range client.Actions() {
		if (a.GetVerb() == "list" || a.GetVerb() == "watch") && a.GetNamespace() != "a" && a.GetNamespace() != "b" {
			t.Errorf("%s %s in namespace %q: only a and b may be asked for", a.GetVerb(), a.GetResource().Resource, a.GetNamespace())
		}
	}

	// Changes in a watched namespace arrive; in another, nothing asks.
	ctx := context.Background()
	if _, err := client.CoreV1().Services("c").Create(ctx, testService("c", "api", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("b").Create(ctx, testSlice("b", "web", "web-2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitHolds(t, []string{"a/web", "b/web"}, []string{"a/web-1", "b/web-1", "b/web-2"})
}

// TestServiceSelector: only services that match service_selector (and
// kube-proxy's own selector) are held, and only their slices; a service
// that is relabelled out takes its slices with it, and one relabelled in
// brings the slices that were left out, before itself.
func TestServiceSelector(t *testing.T) {
	out := map[string]string{"expose": "outside"}
	client := fake.NewClientset(
		testService("shop", "web", out), testSlice("shop", "web", "web-1"),
		testService("shop", "db", nil), testSlice("shop", "db", "db-1"),
		// Matches, but is another proxy's.
		testService("shop", "mesh", map[string]string{"expose": "outside", "service.kubernetes.io/service-proxy-name": "mesh"}),
		testSlice("shop", "mesh", "mesh-1"),
	)
	selectingWatches(client)
	rec := startFake(t, config.Cluster{ServiceSelector: "expose=outside"}, client)
	rec.waitHolds(t, []string{"shop/web"}, []string{"shop/web-1"})
	waitFor(t, "synced", rec.isSynced)

	const want = "expose=outside,!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
	for _, a := range client.Actions() {
		if l, ok := a.(clienttesting.ListActionImpl); ok && l.GetResource().Resource == "services" {
			if got := l.GetListRestrictions().Labels.String(); got != want {
				t.Errorf("services listed with selector %q, want %q", got, want)
			}
		}
	}

	ctx := context.Background()
	svcs := client.CoreV1().Services("shop")
	relabel := func(name string, lbls map[string]string) {
		t.Helper()
		svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Labels = lbls
		if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	relabel("db", out)
	rec.waitHolds(t, []string{"shop/db", "shop/web"}, []string{"shop/db-1", "shop/web-1"})
	rec.mu.Lock()
	events := slices.Clone(rec.events)
	rec.mu.Unlock()
	if i, j := slices.Index(events, "slice shop/db-1"), slices.Index(events, "service shop/db"); i < 0 || i > j {
		t.Errorf("events %v: the slice must come before its service, which would be refused without it", events)
	}

	relabel("web", nil)
	rec.waitHolds(t, []string{"shop/db"}, []string{"shop/db-1"})
	// A slice that changes while its service is left out stays out, and
	// comes back as it is now.
	es, err := client.DiscoveryV1().EndpointSlices("shop").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.7"}}}
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	relabel("web", out)
	rec.waitHolds(t, []string{"shop/db", "shop/web"}, []string{"shop/db-1", "shop/web-1"})
	rec.mu.Lock()
	got := rec.slices["shop/web-1"]
	rec.mu.Unlock()
	if len(got.Endpoints) != 1 {
		t.Errorf("slice web-1 came back as %+v, want its current endpoints", got.Endpoints)
	}

	// A deleted service's slices go at once, before the EndpointSlice
	// controller gets to them.
	if err := svcs.Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitHolds(t, []string{"shop/web"}, []string{"shop/web-1"})
	// A slice that arrives before its service waits for it.
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Create(ctx, testSlice("shop", "api", "api-1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, testService("shop", "api", out), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitHolds(t, []string{"shop/api", "shop/web"}, []string{"shop/api-1", "shop/web-1"})
}

// TestHeadlessSlices: a headless service's slices reach the sink, as the
// service does, so that its endpoints can be named; another proxy's
// slices still do not.
func TestHeadlessSlices(t *testing.T) {
	headless := testService("shop", "db", nil)
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	dbSlice := testSlice("shop", "db", "db-1")
	dbSlice.Labels[corev1.IsHeadlessService] = ""
	meshSlice := testSlice("shop", "mesh", "mesh-1")
	meshSlice.Labels["service.kubernetes.io/service-proxy-name"] = "mesh"
	client := fake.NewClientset(headless, dbSlice,
		testService("shop", "mesh", map[string]string{"service.kubernetes.io/service-proxy-name": "mesh"}), meshSlice)
	selectingWatches(client)
	rec := startFake(t, config.Cluster{}, client)
	rec.waitHolds(t, []string{"shop/db"}, []string{"shop/db-1"})
	waitFor(t, "synced", rec.isSynced)

	// A slice made later arrives through the watch as well.
	later := testSlice("shop", "db", "db-2")
	later.Labels[corev1.IsHeadlessService] = ""
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Create(context.Background(), later, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitHolds(t, []string{"shop/db"}, []string{"shop/db-1", "shop/db-2"})
}

// An event for a slice older than the cache is not passed on: the cache's
// version was, when its service became selected, and the newer event is
// on its way.
func TestSupersededSlice(t *testing.T) {
	rec := newRecorder()
	w, err := newWatcher(config.Cluster{Name: "c"}, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{byService: sliceService})
	w.slices = map[string]cache.Indexer{"": idx}
	w.selected = map[types.NamespacedName]bool{}

	v1, v2 := testSlice("ns", "web", "web-1"), testSlice("ns", "web", "web-1")
	v1.ResourceVersion, v2.ResourceVersion = "1", "2"
	if err := idx.Add(v2); err != nil {
		t.Fatal(err)
	}
	w.serviceChanged(testService("ns", "web", nil))
	if _, got := rec.holds(); !slices.Equal(got, []string{"ns/web-1"}) || rec.slices["ns/web-1"] != v2 {
		t.Fatalf("slices %v: want web-1 from the cache", got)
	}
	w.sliceChanged(nil, v1)
	if rec.slices["ns/web-1"] != v2 {
		t.Error("an older event took the slice back to version 1")
	}
	// A relist that stores an equal copy: its event is passed on.
	v2copy := v2.DeepCopy()
	if err := idx.Update(v2copy); err != nil {
		t.Fatal(err)
	}
	w.sliceChanged(nil, v2)
	if rec.slices["ns/web-1"] != v2 {
		t.Error("the event of the version the cache holds was not passed on")
	}
	// Deleted from the cache: the delete event follows.
	if err := idx.Delete(v2copy); err != nil {
		t.Fatal(err)
	}
	w.sliceChanged(nil, v2copy)
	if rec.slices["ns/web-1"] != v2 {
		t.Error("an event of a slice the cache no longer holds was passed on")
	}
	w.sliceGone(v2copy)
	if _, got := rec.holds(); len(got) != 0 {
		t.Errorf("slices %v after the delete event", got)
	}
}
