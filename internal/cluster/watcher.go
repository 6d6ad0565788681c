// Package cluster watches one cluster's Services and EndpointSlices with
// read-only informers and feeds every change to the model.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Sink receives the objects a watcher sees; *model.Store is one, and
// Fanout hands them to several.
type Sink interface {
	UpsertService(cluster string, svc *corev1.Service)
	DeleteService(cluster, namespace, name string)
	UpsertSlice(cluster string, es *discoveryv1.EndpointSlice)
	DeleteSlice(cluster string, es *discoveryv1.EndpointSlice)
	SetSynced(cluster string)
}

var _ Sink = (*model.Store)(nil)

// UserAgent is sent to every apiserver; set by main from the version.
var UserAgent = "kube-outpost"

// Watcher runs the informers of one cluster.
type Watcher struct {
	name   string
	client kubernetes.Interface
	// link carries the client's requests (link.go); nil for a client
	// made without one.
	link *link
	sink Sink
	log  *slog.Logger
	sel  scope
	// feeds are the list and watch streams this watcher opens, one per
	// resource and watched namespace.
	feeds []feed

	mu     sync.Mutex
	status Status
	cancel context.CancelFunc
	// running counts the informers and the goroutine that reports the
	// sync, which Stop waits for.
	running sync.WaitGroup
	// answering says, per feed, whether the last list or watch request got
	// an answer and no list or watch failed after it.
	answering map[feed]bool

	// deliver serialises what the handlers hand to the sink, so that the
	// set of selected services and the slices the sink holds agree.
	deliver sync.Mutex
	// selected are the services the sink holds: only their slices are
	// passed on.
	selected map[types.NamespacedName]bool
	// slices is each slice informer's cache, by watched namespace ("" for
	// a cluster-wide informer), to find the slices of a service that
	// becomes selected.
	slices map[string]cache.Indexer
}

// Status is what an operator wants to know of a cluster's watch.
type Status struct {
	Synced bool
	// Connected is true while the apiserver answers: the last list or
	// watch of each resource in each watched namespace succeeded and
	// nothing failed after it. With Synced, it means the cluster's changes
	// reach the rules now.
	Connected bool
	// WatchErrors counts list and watch requests that failed (refused,
	// timed out, or answered with an error) and watches that broke.
	WatchErrors int
	LastError   string
	LastErrorAt time.Time
	// DownSince is when the apiserver stopped answering; zero while it
	// answers.
	DownSince time.Time
	// LastHeard is the oldest, over the watched resources and namespaces,
	// of the last time the apiserver was heard from: an answer, a watch
	// event or a bookmark (about every minute). Zero until each was heard.
	LastHeard time.Time
	// Restarts counts, by reason (RestartReasons), the requests the link
	// to the apiserver made again: abandoned as silent, on a connection
	// found dead, or held through an outage.
	Restarts map[string]int
}

// The resources watched, named as the last element of their API path.
const (
	resServices       = "services"
	resEndpointSlices = "endpointslices"
)

// feed is one list and watch stream: a resource in one namespace, or in all
// of them when namespace is "".
type feed struct {
	resource  string
	namespace string
}

func (f feed) String() string {
	if f.namespace == "" {
		return f.resource
	}
	return f.resource + " in namespace " + f.namespace
}

// feedOf names the feed an API request path belongs to: the resource is its
// last element, preceded by namespaces/<name> for a namespaced request. Any
// prefix (an apiserver behind a proxy path) does not matter.
func feedOf(p string) feed {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	f := feed{resource: parts[len(parts)-1]}
	if n := len(parts); n >= 3 && parts[n-3] == "namespaces" {
		f.namespace = parts[n-2]
	}
	return f
}

// scope is what a cluster's informers list and watch.
type scope struct {
	// namespaces get one informer per resource each; [""] is one
	// cluster-wide informer per resource.
	namespaces []string
	// fields leaves the excluded namespaces out, at the apiserver.
	fields string
	// services and slices are the label selectors of the two resources.
	services, slices string
}

// newScope turns a cluster's namespaces, exclude_namespaces and
// service_selector into what the informers ask the apiserver for, so that
// the objects left out never reach this host's memory.
func newScope(c config.Cluster) (scope, error) {
	sel := scope{namespaces: slices.Clone(c.Namespaces), slices: sliceSelector().String()}
	if len(sel.namespaces) == 0 {
		sel.namespaces = []string{metav1.NamespaceAll}
	}
	var not []fields.Selector
	for _, ns := range c.ExcludeNamespaces {
		not = append(not, fields.OneTermNotEqualSelector("metadata.namespace", ns))
	}
	if len(not) > 0 {
		sel.fields = fields.AndSelectors(not...).String()
	}
	svc, err := labels.Parse(c.ServiceSelector)
	if err != nil {
		return scope{}, fmt.Errorf("cluster %q: service_selector %q: %w", c.Name, c.ServiceSelector, err)
	}
	reqs, _ := proxySelector().Requirements()
	sel.services = svc.Add(reqs...).String()
	return sel, nil
}

// feeds are the streams the scope opens.
func (s scope) feeds() []feed {
	var out []feed
	for _, ns := range s.namespaces {
		out = append(out, feed{resServices, ns}, feed{resEndpointSlices, ns})
	}
	return out
}

// RESTConfig loads the client configuration of a configured cluster.
func RESTConfig(c config.Cluster) (*rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: c.Kubeconfig}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("cluster %q: kubeconfig %s: %w", c.Name, c.Kubeconfig, err)
	}
	rc.UserAgent = UserAgent
	// Two informers and nothing else: the defaults would let a relist storm
	// after an outage be throttled for minutes.
	rc.QPS, rc.Burst = 20, 40
	return rc, nil
}

// New makes a watcher for one cluster; it does not connect yet.
func New(c config.Cluster, sink Sink, log *slog.Logger) (*Watcher, error) {
	w, err := newWatcher(c, sink, log)
	if err != nil {
		return nil, err
	}
	if w.client, w.link, err = connect(c, w, w.log); err != nil {
		return nil, err
	}
	return w, nil
}

// newWatcher makes a watcher without a client.
func newWatcher(c config.Cluster, sink Sink, log *slog.Logger) (*Watcher, error) {
	sel, err := newScope(c)
	if err != nil {
		return nil, err
	}
	return &Watcher{name: c.Name, sink: sink, log: log.With("cluster", c.Name), sel: sel, feeds: sel.feeds(), answering: map[feed]bool{}}, nil
}

// Status returns a copy of the watch status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.Connected = len(w.feeds) > 0
	for _, f := range w.feeds {
		st.Connected = st.Connected && w.answering[f]
	}
	if w.link != nil {
		st.DownSince, st.LastHeard, st.Restarts = w.link.downSince(), w.link.lastHeard(w.feeds), w.link.restartCounts()
	}
	return st
}

// answered records the outcome of a request of a feed: nil, or why it
// failed. Requests of other feeds are not this watcher's.
func (w *Watcher) answered(f feed, err error) {
	if !slices.Contains(w.feeds, f) {
		return
	}
	if err != nil {
		w.failed(f, err)
		return
	}
	w.mu.Lock()
	w.answering[f] = true
	w.mu.Unlock()
}

// failed counts a failed list or watch of a feed. An outage produces one
// per retry: say it, but not forever.
func (w *Watcher) failed(f feed, err error) {
	if n := w.record(f, err); n <= 3 || n%50 == 0 {
		w.log.Warn("watch failed; rules stay as they are until it recovers", "resource", f.resource, "namespace", f.namespace, "err", err, "errors", n)
	}
}

// broke counts a watch or list the link ended; the link logged why.
func (w *Watcher) broke(f feed, err error) {
	if slices.Contains(w.feeds, f) {
		w.record(f, err)
	}
}

// record counts a failure of a feed and returns the count.
func (w *Watcher) record(f feed, err error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answering[f] = false
	w.status.WatchErrors++
	w.status.LastError = err.Error()
	w.status.LastErrorAt = time.Now()
	return w.status.WatchErrors
}

// proxySelector is kube-proxy's for services: those handled by another
// proxy, or labelled headless, are not ours.
func proxySelector() labels.Selector {
	noHeadless, _ := labels.NewRequirement(corev1.IsHeadlessService, selection.DoesNotExist, nil)
	return sliceSelector().Add(*noHeadless)
}

// sliceSelector leaves out the slices of services another proxy handles.
// Unlike kube-proxy's, it takes headless services' slices (labelled
// service.kubernetes.io/headless by the EndpointSlice controller): their
// endpoints are what the DNS server answers for the service's name.
func sliceSelector() labels.Selector {
	noProxyName, _ := labels.NewRequirement("service.kubernetes.io/service-proxy-name", selection.DoesNotExist, nil)
	return labels.NewSelector().Add(*noProxyName)
}

// strip drops what the model never reads, so the informer caches of a large
// cluster stay small. A slice keeps its last-change-trigger-time, from which
// the network programming latency is measured.
func strip(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		var keep map[string]string
		if _, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if v, ok := m.GetAnnotations()[corev1.EndpointsLastChangeTriggerTime]; ok {
				keep = map[string]string{corev1.EndpointsLastChangeTriggerTime: v}
			}
		}
		m.SetAnnotations(keep)
	}
	if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
		// The controller copies the service's labels onto its slices;
		// the model reads only the service's name there.
		if name, ok := es.Labels[discoveryv1.LabelServiceName]; ok && len(es.Labels) > 1 {
			es.Labels = map[string]string{discoveryv1.LabelServiceName: name}
		}
		es.Endpoints = model.EndpointsRead(es.Endpoints)
	}
	return obj, nil
}

// byService indexes slices by the service they belong to.
const byService = "service"

func sliceService(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	nn, ok := model.SliceOwner(es)
	if !ok {
		return nil, nil
	}
	return []string{nn.String()}, nil
}

// Start watches until ctx is done or Stop is called. It returns at once; the
// informers retry on their own while the apiserver is unreachable, and the
// rules programmed before stay in place meanwhile.
//
// With namespaces, every namespace has its own informers, whose requests a
// Role in that namespace allows. EndpointSlices cannot be selected by their
// service's labels: every slice of a watched namespace is listed, and only
// the ones of selected services are passed on.
func (w *Watcher) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	w.selected = map[types.NamespacedName]bool{}
	w.slices = map[string]cache.Indexer{}
	withFields := func(labelSelector string) func(*metav1.ListOptions) {
		return func(o *metav1.ListOptions) { o.LabelSelector, o.FieldSelector = labelSelector, w.sel.fields }
	}
	var infs []cache.SharedIndexInformer
	var synced []cache.InformerSynced
	for _, ns := range w.sel.namespaces {
		svcInf := coreinformers.NewFilteredServiceInformer(w.client, ns, 0, cache.Indexers{}, withFields(w.sel.services))
		esInf := discoveryinformers.NewFilteredEndpointSliceInformer(w.client, ns, 0,
			cache.Indexers{byService: sliceService}, withFields(w.sel.slices))
		w.slices[ns] = esInf.GetIndexer()
		for f, inf := range map[feed]cache.SharedIndexInformer{{resServices, ns}: svcInf, {resEndpointSlices, ns}: esInf} {
			handler := func(ctx context.Context, _ *cache.Reflector, err error) { w.watchError(ctx, f, err) }
			if err := inf.SetWatchErrorHandlerWithContext(handler); err != nil {
				cancel()
				return err
			}
			if err := inf.SetTransform(strip); err != nil {
				cancel()
				return err
			}
		}
		svcReg, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.serviceChanged(o) },
			UpdateFunc: func(_, o any) { w.serviceChanged(o) },
			DeleteFunc: func(o any) {
				if svc, ok := unwrap(o).(*corev1.Service); ok {
					w.serviceGone(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
				}
			},
		})
		if err != nil {
			cancel()
			return err
		}
		esReg, err := esInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.sliceChanged(nil, o) },
			UpdateFunc: func(old, o any) { w.sliceChanged(old, o) },
			DeleteFunc: func(o any) {
				if es, ok := unwrap(o).(*discoveryv1.EndpointSlice); ok {
					w.sliceGone(es)
				}
			},
		})
		if err != nil {
			cancel()
			return err
		}
		infs = append(infs, svcInf, esInf)
		synced = append(synced, svcReg.HasSynced, esReg.HasSynced)
	}
	where := strings.Join(w.sel.namespaces, ",")
	if where == "" {
		where = "all"
	}
	w.log.Debug("watching", "namespaces", where, "fields", w.sel.fields, "services", w.sel.services, "endpointslices", w.sel.slices)
	w.mu.Lock()
	w.cancel = cancel
	w.mu.Unlock()
	for _, inf := range infs {
		w.running.Go(func() { inf.RunWithContext(ctx) })
	}
	if w.link != nil {
		w.running.Go(func() { w.link.run(ctx) })
	}
	w.running.Go(func() {
		// The handlers, not just the caches, must have seen every object
		// of every namespace before the cluster counts as synced: only
		// then may the backend replace the rules of an earlier run.
		if !cache.WaitForCacheSync(ctx.Done(), synced...) {
			return
		}
		w.mu.Lock()
		w.status.Synced = true
		w.mu.Unlock()
		w.log.Info("cluster synced")
		w.sink.SetSynced(w.name)
	})
	return nil
}

// Stop ends the watch and waits until no event handler runs any more, so
// that nothing of this watcher reaches the model afterwards.
func (w *Watcher) Stop() {
	w.mu.Lock()
	cancel := w.cancel
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	w.running.Wait()
}

// serviceChanged passes on a service the apiserver says is selected. One
// that becomes selected brings its slices along: they were left out until
// now, whichever came first. The slices go first, so that the service is
// never programmed without the endpoints it has, which would refuse its
// connections for a moment.
func (w *Watcher) serviceChanged(o any) {
	svc, ok := o.(*corev1.Service)
	if !ok {
		return
	}
	nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	w.deliver.Lock()
	defer w.deliver.Unlock()
	if !w.selected[nn] {
		w.selected[nn] = true
		for _, es := range w.slicesOf(nn) {
			w.sink.UpsertSlice(w.name, es)
		}
	}
	w.sink.UpsertService(w.name, svc)
}

// serviceGone removes a service that was deleted or no longer matches the
// label selector (the apiserver sends a watch a delete for an object that
// stops matching it), and its slices with it: they would only take memory
// in the model until the service came back.
func (w *Watcher) serviceGone(nn types.NamespacedName) {
	w.deliver.Lock()
	defer w.deliver.Unlock()
	w.sink.DeleteService(w.name, nn.Namespace, nn.Name)
	if !w.selected[nn] {
		return
	}
	delete(w.selected, nn)
	// A slice deleted from the cache but not yet from the model is
	// removed by its own delete event, which sliceGone always passes on.
	for _, es := range w.slicesOf(nn) {
		w.sink.DeleteSlice(w.name, es)
	}
}

// sliceChanged passes on a slice of a selected service.
func (w *Watcher) sliceChanged(old, o any) {
	es, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	nn, ok := model.SliceOwner(es)
	w.deliver.Lock()
	defer w.deliver.Unlock()
	if prev, isSlice := old.(*discoveryv1.EndpointSlice); isSlice {
		// A slice moved to another service leaves the first one.
		if was, _ := model.SliceOwner(prev); was != nn && w.selected[was] {
			w.sink.DeleteSlice(w.name, prev)
		}
	}
	if !ok || !w.selected[nn] || w.superseded(es) {
		return
	}
	w.sink.UpsertSlice(w.name, es)
}

// sliceGone passes on every slice deletion: the sink ignores the ones it
// does not hold, and one it holds must go even if its service just left.
func (w *Watcher) sliceGone(es *discoveryv1.EndpointSlice) {
	w.deliver.Lock()
	defer w.deliver.Unlock()
	w.sink.DeleteSlice(w.name, es)
}

// superseded reports whether the cache already holds a newer version of
// the slice, or none any more: an event for that is on its way. Passing on
// the older one would take the model back to it, after serviceChanged took
// the newer one from the cache. Resource versions are compared for
// equality only, as the API allows; a relist that stores an equal copy
// keeps them equal.
func (w *Watcher) superseded(es *discoveryv1.EndpointSlice) bool {
	idx := w.indexerFor(es.Namespace)
	if idx == nil {
		return false
	}
	cur, exists, err := idx.GetByKey(es.Namespace + "/" + es.Name)
	if err != nil {
		return false
	}
	if !exists {
		return true
	}
	c, ok := cur.(*discoveryv1.EndpointSlice)
	return ok && c.ResourceVersion != es.ResourceVersion
}

// slicesOf returns the cached slices of a service.
func (w *Watcher) slicesOf(nn types.NamespacedName) []*discoveryv1.EndpointSlice {
	idx := w.indexerFor(nn.Namespace)
	if idx == nil {
		return nil
	}
	objs, err := idx.ByIndex(byService, nn.String())
	if err != nil {
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, es)
		}
	}
	return out
}

func (w *Watcher) indexerFor(namespace string) cache.Indexer {
	if idx, ok := w.slices[namespace]; ok {
		return idx
	}
	return w.slices[metav1.NamespaceAll]
}

func (w *Watcher) watchError(_ context.Context, f feed, err error) {
	// What the reflector's default handler treats as routine: a watch
	// that ended or expired, after which it lists or watches again.
	if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		w.log.Debug("watch ended; listing again", "resource", f.resource, "namespace", f.namespace, "err", err)
		return
	}
	// A failed request was counted when it failed; what is left are
	// failures after an answer, such as a watch stream that broke.
	w.mu.Lock()
	counted := !w.answering[f]
	w.mu.Unlock()
	if !counted {
		w.failed(f, err)
	}
}

func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}
