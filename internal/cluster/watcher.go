// Package cluster watches one cluster's Services and EndpointSlices with
// read-only informers and feeds every change to the model.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Sink receives the objects a watcher sees; *model.Store is one.
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
	sink   Sink
	log    *slog.Logger

	mu      sync.Mutex
	status  Status
	cancel  context.CancelFunc
	factory informers.SharedInformerFactory
	// answering says, per resource, whether the last list or watch
	// request got an answer and no list or watch failed after it.
	answering map[string]bool
}

// Status is what an operator wants to know of a cluster's watch.
type Status struct {
	Synced bool
	// Connected is true while the apiserver answers: the last list or
	// watch of each resource succeeded and nothing failed after it. With
	// Synced, it means the cluster's changes reach the rules now.
	Connected bool
	// WatchErrors counts list and watch requests that failed (refused,
	// timed out, or answered with an error) and watches that broke.
	WatchErrors int
	LastError   string
	LastErrorAt time.Time
}

// The resources watched, named as the last element of their API path.
const (
	resServices       = "services"
	resEndpointSlices = "endpointslices"
)

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
	rc, err := RESTConfig(c)
	if err != nil {
		return nil, err
	}
	w := &Watcher{name: c.Name, sink: sink, log: log.With("cluster", c.Name), answering: map[string]bool{}}
	// The watch error handler alone cannot tell an apiserver that is down:
	// the reflector retries a refused watch without calling it. Every
	// request's outcome can.
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &observer{next: rt, w: w} })
	if w.client, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	return w, nil
}

// Status returns a copy of the watch status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.Connected = w.answering[resServices] && w.answering[resEndpointSlices]
	return st
}

// answered records the outcome of a request for a resource: nil, or why it
// failed.
func (w *Watcher) answered(resource string, err error) {
	if resource != resServices && resource != resEndpointSlices {
		return
	}
	if err != nil {
		w.failed(resource, err)
		return
	}
	w.mu.Lock()
	w.answering[resource] = true
	w.mu.Unlock()
}

// failed counts a failed list or watch of a resource. An outage produces
// one per retry: say it, but not forever.
func (w *Watcher) failed(resource string, err error) {
	w.mu.Lock()
	w.answering[resource] = false
	w.status.WatchErrors++
	w.status.LastError = err.Error()
	w.status.LastErrorAt = time.Now()
	n := w.status.WatchErrors
	w.mu.Unlock()
	if n <= 3 || n%50 == 0 {
		w.log.Warn("watch failed; rules stay as they are until it recovers", "resource", resource, "err", err, "errors", n)
	}
}

// observer passes each apiserver request's outcome to its watcher.
type observer struct {
	next http.RoundTripper
	w    *Watcher
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	res := path.Base(req.URL.Path)
	switch {
	case errors.Is(req.Context().Err(), context.Canceled):
		// Stopped by us (a reload, the end): not the apiserver's doing.
		// A deadline that passed is: the apiserver did not answer.
	case err != nil:
		o.w.answered(res, err)
	// 410 Gone is the routine "resource version too old": the reflector
	// lists again, which is the apiserver working as it should.
	case resp.StatusCode >= 400 && resp.StatusCode != http.StatusGone:
		o.w.answered(res, fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status))
	default:
		o.w.answered(res, nil)
	}
	return resp, err
}

// selector is kube-proxy's: services handled by another proxy, and headless
// services' slices, are not ours.
func selector() string {
	noProxyName, _ := labels.NewRequirement("service.kubernetes.io/service-proxy-name", selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(corev1.IsHeadlessService, selection.DoesNotExist, nil)
	return labels.NewSelector().Add(*noProxyName, *noHeadless).String()
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
	return obj, nil
}

// Start watches until ctx is done or Stop is called. It returns at once; the
// informers retry on their own while the apiserver is unreachable, and the
// rules programmed before stay in place meanwhile.
func (w *Watcher) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(w.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector() }),
		informers.WithTransform(strip))
	svcInf := factory.Core().V1().Services().Informer()
	fail := func(err error) error { cancel(); return err }
	esInf := factory.Discovery().V1().EndpointSlices().Informer()
	for res, inf := range map[string]cache.SharedIndexInformer{resServices: svcInf, resEndpointSlices: esInf} {
		handler := func(ctx context.Context, r *cache.Reflector, err error) { w.watchError(ctx, res, err) }
		if err := inf.SetWatchErrorHandlerWithContext(handler); err != nil {
			return fail(err)
		}
	}
	svcReg, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.upsertService(o) },
		UpdateFunc: func(_, o any) { w.upsertService(o) },
		DeleteFunc: func(o any) {
			if svc, ok := unwrap(o).(*corev1.Service); ok {
				w.sink.DeleteService(w.name, svc.Namespace, svc.Name)
			}
		},
	})
	if err != nil {
		return fail(err)
	}
	esReg, err := esInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.upsertSlice(o) },
		UpdateFunc: func(_, o any) { w.upsertSlice(o) },
		DeleteFunc: func(o any) {
			if es, ok := unwrap(o).(*discoveryv1.EndpointSlice); ok {
				w.sink.DeleteSlice(w.name, es)
			}
		},
	})
	if err != nil {
		return fail(err)
	}
	w.mu.Lock()
	w.cancel, w.factory = cancel, factory
	w.mu.Unlock()
	factory.Start(ctx.Done())
	go func() {
		// The handlers, not just the caches, must have seen every object
		// before the cluster counts as synced: only then may the backend
		// replace the rules of an earlier run.
		if !cache.WaitForCacheSync(ctx.Done(), svcReg.HasSynced, esReg.HasSynced) {
			return
		}
		w.mu.Lock()
		w.status.Synced = true
		w.mu.Unlock()
		w.log.Info("cluster synced")
		w.sink.SetSynced(w.name)
	}()
	return nil
}

// Stop ends the watch and waits until no event handler runs any more, so
// that nothing of this watcher reaches the model afterwards.
func (w *Watcher) Stop() {
	w.mu.Lock()
	cancel, factory := w.cancel, w.factory
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	factory.Shutdown()
}

func (w *Watcher) upsertService(o any) {
	if svc, ok := o.(*corev1.Service); ok {
		w.sink.UpsertService(w.name, svc)
	}
}

func (w *Watcher) upsertSlice(o any) {
	if es, ok := o.(*discoveryv1.EndpointSlice); ok {
		w.sink.UpsertSlice(w.name, es)
	}
}

func (w *Watcher) watchError(_ context.Context, resource string, err error) {
	// What the reflector's default handler treats as routine: a watch
	// that ended or expired, after which it lists or watches again.
	if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		w.log.Debug("watch ended; listing again", "resource", resource, "err", err)
		return
	}
	// A failed request was counted when it failed; what is left are
	// failures after an answer, such as a watch stream that broke.
	w.mu.Lock()
	counted := !w.answering[resource]
	w.mu.Unlock()
	if !counted {
		w.failed(resource, err)
	}
}

func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}
