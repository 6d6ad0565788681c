// Package cluster watches one cluster's Services and EndpointSlices with
// read-only informers and feeds every change to the model.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
}

// Status is what an operator wants to know of a cluster's watch.
type Status struct {
	Synced      bool
	WatchErrors int
	LastError   string
	LastErrorAt time.Time
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
	rc, err := RESTConfig(c)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	return &Watcher{name: c.Name, client: client, sink: sink, log: log.With("cluster", c.Name)}, nil
}

// Status returns a copy of the watch status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// selector is kube-proxy's: services handled by another proxy, and headless
// services' slices, are not ours.
func selector() string {
	noProxyName, _ := labels.NewRequirement("service.kubernetes.io/service-proxy-name", selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(corev1.IsHeadlessService, selection.DoesNotExist, nil)
	return labels.NewSelector().Add(*noProxyName, *noHeadless).String()
}

// strip drops what the model never reads, so the informer caches of a large
// cluster stay small.
func strip(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		m.SetAnnotations(nil)
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
	for _, inf := range []cache.SharedIndexInformer{svcInf, esInf} {
		if err := inf.SetWatchErrorHandlerWithContext(w.watchError); err != nil {
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

func (w *Watcher) watchError(_ context.Context, _ *cache.Reflector, err error) {
	w.mu.Lock()
	w.status.WatchErrors++
	w.status.LastError = err.Error()
	w.status.LastErrorAt = time.Now()
	n := w.status.WatchErrors
	w.mu.Unlock()
	// An outage produces an error per retry: say it, but not forever.
	if n <= 3 || n%50 == 0 {
		w.log.Warn("watch failed; rules stay as they are until it recovers", "err", err, "errors", n)
	}
}

func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}
