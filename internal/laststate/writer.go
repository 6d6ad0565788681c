package laststate

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Source is what the writer reads the clusters' objects from: the
// *model.Store.
type Source interface {
	Revision(cluster string) (uint64, bool)
	Export(cluster string) (model.Objects, uint64, bool)
}

var _ Source = (*model.Store)(nil)

// Target is a configured cluster, as the writer needs it.
type Target struct {
	Identity Identity
	// Answering: its apiserver answers now, so that what the store holds
	// is current even when it has not changed.
	Answering bool
}

// WriterOptions configures a Writer.
type WriterOptions struct {
	Dir    string
	Source Source
	// Targets are the configured clusters, read at every pass.
	Targets func() []Target
	Log     *slog.Logger
	// MinInterval is the least time between two writes of a cluster's
	// state; Refresh, how often an unchanged one is written again while
	// its apiserver answers, so that its time says how current it is.
	// Zero stands for the defaults.
	MinInterval, Refresh time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

const (
	// DefaultMinInterval: a busy cluster costs one write per half a
	// minute at most; a state is at most that much behind the kernel's.
	DefaultMinInterval = 30 * time.Second
	// DefaultRefresh: a state's time is at most this far behind when
	// it was last known to be current; the stop of the daemon saves it
	// again too.
	DefaultRefresh = 15 * time.Minute
)

// Saved is what a cluster's state on disk is, as this run wrote it.
type Saved struct {
	// At is when this run last saved the state, zero before the first
	// time; Bytes, the file's size then.
	At    time.Time
	Bytes int
	// Err is the last attempt's error; Errors counts the failed attempts.
	Err    error
	Errors int
}

// Writer saves each cluster's state off the sync loop: after a sync asks
// (Poke), and on its own every MinInterval, each cluster whose objects
// changed and were last written at least MinInterval ago, or that is due a
// refresh.
type Writer struct {
	o    WriterOptions
	poke chan struct{}

	// Only Run's goroutine touches these.
	written map[string]*written
	kept    []string // the clusters whose files the last Prune kept

	mu    sync.Mutex
	saved map[string]Saved
}

// written is what the writer last did for a cluster.
type written struct {
	rev      uint64
	identity Identity
	tried    time.Time // the last attempt, successful or not
}

// NewWriter makes a writer; it writes only while Run runs.
func NewWriter(o WriterOptions) *Writer {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinInterval == 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.Refresh == 0 {
		o.Refresh = DefaultRefresh
	}
	return &Writer{o: o, poke: make(chan struct{}, 1), written: map[string]*written{}, saved: map[string]Saved{}}
}

// Poke asks for a pass soon; it never blocks, and pokes merge.
func (w *Writer) Poke() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Run writes until ctx is done, then saves once more what changed and the
// time of what is current, so that a reboot right after a stop finds both.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.o.MinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.pass(true)
			return
		case <-w.poke:
			w.pass(false)
		case <-t.C:
			w.pass(false)
		}
	}
}

// Saved returns what this run saved of cluster.
func (w *Writer) Saved(cluster string) Saved {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.saved[cluster]
}

// pass writes the states that are due; last: the daemon stops.
func (w *Writer) pass(last bool) {
	targets := w.o.Targets()
	names := make([]string, 0, len(targets))
	for _, tg := range targets {
		names = append(names, tg.Identity.Cluster)
	}
	slices.Sort(names)
	if !slices.Equal(names, w.kept) {
		if err := Prune(w.o.Dir, names); err != nil {
			w.o.Log.Warn("could not remove the kept states of clusters no longer configured", "dir", w.o.Dir, "err", err)
		} else {
			w.kept = names
		}
		w.mu.Lock()
		for name := range w.saved {
			if !slices.Contains(names, name) {
				delete(w.saved, name)
				delete(w.written, name)
			}
		}
		w.mu.Unlock()
	}
	for _, tg := range targets {
		w.write(tg, last)
	}
}

// write saves one cluster's state if it is due.
func (w *Writer) write(tg Target, last bool) {
	name := tg.Identity.Cluster
	rev, ok := w.o.Source.Revision(name)
	if !ok {
		return
	}
	now := w.o.Now()
	wr := w.written[name]
	if wr == nil {
		wr = &written{}
		w.written[name] = wr
	}
	changed := wr.identity.Cluster == "" || rev != wr.rev || wr.identity.differs(tg.Identity) != ""
	since := now.Sub(wr.tried)
	due := changed && since >= w.o.MinInterval || tg.Answering && since >= w.o.Refresh
	if last {
		due = changed || tg.Answering && since >= w.o.MinInterval
	}
	if !due {
		return
	}
	objs, rev, ok := w.o.Source.Export(name)
	if !ok {
		return
	}
	start := time.Now()
	n, err := Save(w.o.Dir, State{Identity: tg.Identity, SavedAt: now, Objects: objs})
	// Tried: a failure is tried again at the next change or refresh, not
	// at every pass.
	wr.rev, wr.identity, wr.tried = rev, tg.Identity, now
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.saved[name]
	if err != nil {
		var big *TooBigError
		if errors.As(err, &big) {
			// The file on disk holds an older state than the one this
			// run has seen: a boot must not serve it as the last.
			if rmErr := Remove(w.o.Dir, name); rmErr != nil {
				err = errors.Join(err, rmErr)
			}
		}
		if s.Err == nil || s.Err.Error() != err.Error() {
			w.o.Log.Warn("could not save the cluster's last known state; a restart while its apiserver is down serves nothing of it",
				"cluster", name, "dir", w.o.Dir, "err", err)
		}
		s.Err = err
		s.Errors++
		w.saved[name] = s
		return
	}
	if s.Err != nil {
		w.o.Log.Info("saved the cluster's last known state again", "cluster", name, "dir", w.o.Dir)
	}
	s.At, s.Bytes, s.Err = now, n, nil
	w.saved[name] = s
	w.o.Log.Debug("saved the cluster's last known state", "cluster", name, "bytes", n,
		"services", len(objs.Services), "endpoint_slices", len(objs.Slices), "took", time.Since(start))
}
