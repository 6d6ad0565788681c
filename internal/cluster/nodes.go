package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// NodeWatcher watches one cluster's Nodes, which reach = "nodeport" and
// reach = "routes" need and reach = "direct" does not: only those modes
// start one, so that the RBAC of a direct cluster stays without nodes.
// It lists and watches, never gets or writes.
//
// It publishes a snapshot of every node, sorted by name, once the first list
// is complete and then on every change that matters (most Node updates are
// kubelet heartbeats and change nothing here). Never a partial list: routes
// synced from one would delete the routes of the nodes not seen yet.
type NodeWatcher struct {
	cluster string
	client  kubernetes.Interface
	// link carries the client's requests when NodeWatcherFor made it
	// (link.go); nil otherwise.
	link     *link
	onChange func([]model.NodeInfo)
	log      *slog.Logger

	// pubMu serialises publishing, so that snapshots reach OnChange in
	// the order they were taken.
	pubMu sync.Mutex

	mu        sync.Mutex // guards the fields below
	nodes     map[string]nodeEntry
	synced    bool
	published []model.NodeInfo
	status    NodeStatus
	// answering: the last list or watch got an answer and nothing failed
	// after it, so a failure the informer reports was not counted yet.
	answering bool
	cancel    context.CancelFunc
	factory   informers.SharedInformerFactory
	// linkDone is closed when the link has stopped.
	linkDone chan struct{}
}

// nodeEntry is one node as converted, with what was wrong with it, so that a
// problem is logged once per change of the node and not on every event.
type nodeEntry struct {
	info     model.NodeInfo
	problems []string
}

// NodeStatus is what an operator wants to know of a node watch.
type NodeStatus struct {
	Synced      bool
	Nodes       int
	WatchErrors int
	LastError   string
	LastErrorAt time.Time
	// Restarts counts the requests the link made again, by reason, as
	// Status.Restarts does for the cluster's other watches.
	Restarts map[string]int
}

// NodeWatcherOptions configures NewNodeWatcher.
type NodeWatcherOptions struct {
	// Cluster names the cluster in logs.
	Cluster string
	// OnChange receives every snapshot. Calls never overlap. It runs on
	// the informer's goroutine, so it must return quickly (queue a sync)
	// and must not call Stop. The slice and its NodeInfos are never
	// modified afterwards and must not be modified by the receiver.
	OnChange func([]model.NodeInfo)
	// Log receives warnings about nodes that are skipped in part; nil
	// discards.
	Log *slog.Logger
}

// NewNodeWatcher makes a node watcher on client; it does not connect yet. In
// the daemon, client comes from RESTConfig of the configured cluster.
func NewNodeWatcher(client kubernetes.Interface, opts NodeWatcherOptions) *NodeWatcher {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NodeWatcher{
		cluster:  opts.Cluster,
		client:   client,
		onChange: opts.OnChange,
		log:      log.With("cluster", opts.Cluster),
		nodes:    map[string]nodeEntry{},
	}
}

// NodeWatcherFor makes the node watcher of a configured cluster, with a
// client built as New builds the cluster watcher's (RESTConfig: the same
// kubeconfig, context, user agent and rate limits). opts.Cluster defaults to
// the cluster's name. It does not connect yet.
func NodeWatcherFor(c config.Cluster, opts NodeWatcherOptions) (*NodeWatcher, error) {
	if opts.Cluster == "" {
		opts.Cluster = c.Name
	}
	w := NewNodeWatcher(nil, opts)
	var err error
	if w.client, w.link, err = connect(c, w, w.log.With("resource", "nodes")); err != nil {
		return nil, err
	}
	return w, nil
}

// Start watches until ctx is done or Stop is called. It returns at once; the
// informer retries on its own while the apiserver is unreachable, and the
// last snapshot stays the last one meanwhile.
func (w *NodeWatcher) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(w.client, 0, informers.WithTransform(stripNode))
	inf := factory.Core().V1().Nodes().Informer()
	if err := inf.SetWatchErrorHandlerWithContext(w.watchError); err != nil {
		cancel()
		return err
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.upsert(o) },
		UpdateFunc: func(_, o any) { w.upsert(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				w.mu.Lock()
				delete(w.nodes, n.Name)
				w.mu.Unlock()
				w.publish()
			}
		},
	})
	if err != nil {
		cancel()
		return err
	}
	linkDone := make(chan struct{})
	w.mu.Lock()
	w.cancel, w.factory, w.linkDone = cancel, factory, linkDone
	w.mu.Unlock()
	factory.Start(ctx.Done())
	go func() {
		defer close(linkDone)
		if w.link != nil {
			w.link.run(ctx)
		}
	}()
	go func() {
		// The handler, not just the cache, must have seen every node
		// before the first snapshot: it is the complete list.
		if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
			return
		}
		w.mu.Lock()
		w.synced = true
		w.status.Synced = true
		n := len(w.nodes)
		w.mu.Unlock()
		w.log.Info("nodes synced", "nodes", n)
		w.publish()
	}()
	return nil
}

// Stop ends the watch and waits until no event handler runs any more, so
// that OnChange is not called afterwards.
func (w *NodeWatcher) Stop() {
	w.mu.Lock()
	cancel, factory, linkDone := w.cancel, w.factory, w.linkDone
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	factory.Shutdown()
	<-linkDone
}

// Nodes returns the last published snapshot, and whether the first list is
// complete (before, the snapshot is nil).
func (w *NodeWatcher) Nodes() ([]model.NodeInfo, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.published, w.synced
}

// Status returns a copy of the watch status.
func (w *NodeWatcher) Status() NodeStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.Nodes = len(w.published)
	if w.link != nil {
		st.Restarts = w.link.restartCounts()
	}
	return st
}

func (w *NodeWatcher) upsert(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	info, problems := nodeInfo(n)
	w.mu.Lock()
	old, had := w.nodes[n.Name]
	w.nodes[n.Name] = nodeEntry{info: info, problems: problems}
	w.mu.Unlock()
	if len(problems) > 0 && (!had || !slices.Equal(old.problems, problems)) {
		w.log.Warn("node partly skipped", "node", n.Name, "problems", strings.Join(problems, "; "))
	}
	w.publish()
}

// publish hands a new snapshot to OnChange, unless nothing changed since the
// last one or the first list is not complete.
func (w *NodeWatcher) publish() {
	w.pubMu.Lock()
	defer w.pubMu.Unlock()
	w.mu.Lock()
	if !w.synced {
		w.mu.Unlock()
		return
	}
	snap := make([]model.NodeInfo, 0, len(w.nodes))
	for _, e := range w.nodes {
		snap = append(snap, e.info)
	}
	slices.SortFunc(snap, func(a, b model.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	// A nil published means never published: an empty cluster still
	// gets its first (empty) snapshot.
	if w.published != nil && slices.EqualFunc(snap, w.published, model.NodeInfo.Equal) {
		w.mu.Unlock()
		return
	}
	w.published = snap
	w.mu.Unlock()
	if w.onChange != nil {
		w.onChange(snap)
	}
}

func (w *NodeWatcher) watchError(_ context.Context, _ *cache.Reflector, err error) {
	// Routine: a watch that ended or expired, after which the reflector
	// lists or watches again.
	if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		w.log.Debug("node watch ended; listing again", "err", err)
		return
	}
	// Through a link, a failed request was counted when it failed; what
	// is left are failures after an answer, such as a stream that broke.
	w.mu.Lock()
	counted := w.link != nil && !w.answering
	w.mu.Unlock()
	if !counted {
		w.failed(err)
	}
}

// answered records the outcome of a node list or watch (linkObserver).
func (w *NodeWatcher) answered(f feed, err error) {
	if f.resource != "nodes" {
		return
	}
	if err != nil {
		w.failed(err)
		return
	}
	w.mu.Lock()
	w.answering = true
	w.mu.Unlock()
}

// broke counts a node watch the link ended; the link logged why.
func (w *NodeWatcher) broke(_ feed, err error) { w.record(err) }

// failed counts a failed node list or watch. An outage produces one per
// retry: say it, but not forever. A 403 here means the credentials lack
// list/watch on nodes.
func (w *NodeWatcher) failed(err error) {
	if n := w.record(err); n <= 3 || n%50 == 0 {
		w.log.Warn("node watch failed; the last node list stays in use until it recovers", "err", err, "errors", n)
	}
}

func (w *NodeWatcher) record(err error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answering = false
	w.status.WatchErrors++
	w.status.LastError = err.Error()
	w.status.LastErrorAt = time.Now()
	return w.status.WatchErrors
}

// stripNode keeps of a Node only what nodeInfo reads. A Node carries images,
// volumes, capacity and managed fields, several kilobytes each, and a large
// cluster has thousands of them.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Spec: corev1.NodeSpec{
			PodCIDR:       n.Spec.PodCIDR,
			PodCIDRs:      n.Spec.PodCIDRs,
			Unschedulable: n.Spec.Unschedulable,
		},
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			// Without the heartbeat and transition times: they change on
			// every kubelet report and are never read.
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, Reason: c.Reason}}
			break
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}

// nodeInfo converts a Node, and says what of it is skipped and why. A node
// with a bad address or pod CIDR keeps the rest: one bad entry should not
// take its good ones out of service.
func nodeInfo(n *corev1.Node) (model.NodeInfo, []string) {
	info := model.NodeInfo{Name: n.Name, Unschedulable: n.Spec.Unschedulable}
	var problems []string
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			info.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for i, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("status.addresses[%d] %s %q is not an IP address: skipped", i, a.Type, a.Address))
			continue
		case ip.Zone() != "":
			problems = append(problems, fmt.Sprintf("status.addresses[%d] %s %q has a zone: skipped", i, a.Type, a.Address))
			continue
		}
		info.Addresses = append(info.Addresses, model.NodeAddr{Type: string(a.Type), Addr: ip.Unmap()})
	}
	cidrs, field := n.Spec.PodCIDRs, "spec.podCIDRs"
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		// Written by clusters older than dual-stack; newer ones set both.
		cidrs, field = []string{n.Spec.PodCIDR}, "spec.podCIDR"
	}
	for i, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s[%d] %q is not a CIDR: skipped", field, i, s))
			continue
		case p.Addr().Is4In6():
			// Neither family's routes could carry it as written.
			problems = append(problems, fmt.Sprintf("%s[%d] %q is an IPv4-mapped IPv6 prefix: skipped", field, i, s))
			continue
		case p != p.Masked():
			problems = append(problems, fmt.Sprintf("%s[%d] %q is not a network address (did you mean %v?): skipped", field, i, s, p.Masked()))
			continue
		}
		if !slices.Contains(info.PodCIDRs, p) {
			info.PodCIDRs = append(info.PodCIDRs, p)
		}
	}
	return info, problems
}
