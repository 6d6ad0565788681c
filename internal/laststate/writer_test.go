package laststate

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// fakeSource is a store with one revision per cluster.
type fakeSource struct {
	mu   sync.Mutex
	rev  map[string]uint64
	objs map[string]model.Objects
}

func (f *fakeSource) Revision(c string) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rev[c]
	return r, ok
}

func (f *fakeSource) Export(c string) (model.Objects, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rev[c]
	return f.objs[c], r, ok
}

type writerEnv struct {
	w       *Writer
	src     *fakeSource
	dir     string
	clock   time.Time
	targets []Target
	log     *bytes.Buffer
}

func newWriterEnv(t *testing.T) *writerEnv {
	e := &writerEnv{src: &fakeSource{rev: map[string]uint64{}, objs: map[string]model.Objects{}}, dir: t.TempDir(), clock: now, log: &bytes.Buffer{}}
	e.targets = []Target{{Identity: alphaID, Answering: true}}
	e.w = NewWriter(WriterOptions{
		Dir: e.dir, Source: e.src, Log: slog.New(slog.NewTextHandler(e.log, nil)),
		Targets: func() []Target { return e.targets },
		Now:     func() time.Time { return e.clock },
	})
	return e
}

// savedAt is the time in alpha's file, zero without one.
func (e *writerEnv) savedAt(t *testing.T) time.Time {
	t.Helper()
	st, err := Load(e.dir, alphaID, 1000*time.Hour, e.clock)
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.SavedAt
}

func (e *writerEnv) set(rev uint64) {
	e.src.mu.Lock()
	e.src.rev["alpha"] = rev
	e.src.objs["alpha"] = testState().Objects
	e.src.mu.Unlock()
}

func TestWriterWhen(t *testing.T) {
	e := newWriterEnv(t)
	e.w.pass(false)
	if !e.savedAt(t).IsZero() {
		t.Fatal("saved a cluster that has not synced")
	}
	e.set(1)
	e.w.pass(false)
	if got := e.savedAt(t); !got.Equal(now) {
		t.Fatalf("saved at %v, want at once (%v)", got, now)
	}
	if s := e.w.Saved("alpha"); !s.At.Equal(now) || s.Bytes == 0 || s.Err != nil {
		t.Errorf("Saved %+v", s)
	}

	// A change soon after waits for MinInterval.
	e.set(2)
	e.clock = now.Add(DefaultMinInterval / 2)
	e.w.pass(false)
	if got := e.savedAt(t); !got.Equal(now) {
		t.Errorf("a change %v after the last save was saved at once", DefaultMinInterval/2)
	}
	e.clock = now.Add(DefaultMinInterval)
	e.w.pass(false)
	if got := e.savedAt(t); !got.Equal(e.clock) {
		t.Errorf("saved at %v, want %v", got, e.clock)
	}
	changedAt := e.clock

	// Nothing changes: the time is refreshed while the apiserver answers,
	// and only then.
	e.clock = changedAt.Add(DefaultRefresh - time.Second)
	e.w.pass(false)
	if got := e.savedAt(t); !got.Equal(changedAt) {
		t.Error("an unchanged state was saved before its refresh")
	}
	e.targets[0].Answering = false
	e.clock = changedAt.Add(DefaultRefresh)
	e.w.pass(false)
	if got := e.savedAt(t); !got.Equal(changedAt) {
		t.Error("an unchanged state was refreshed while its apiserver does not answer")
	}
	e.targets[0].Answering = true
	e.w.pass(false)
	if got := e.savedAt(t); !got.Equal(e.clock) {
		t.Errorf("refresh: saved at %v, want %v", got, e.clock)
	}

	// The last pass saves a change at once, and refreshes the time of an
	// answering cluster's.
	e.set(3)
	e.clock = e.clock.Add(time.Second)
	e.w.pass(true)
	if got := e.savedAt(t); !got.Equal(e.clock) {
		t.Errorf("last pass: a change saved at %v, want %v", got, e.clock)
	}
	e.clock = e.clock.Add(DefaultMinInterval)
	e.w.pass(true)
	if got := e.savedAt(t); !got.Equal(e.clock) {
		t.Errorf("last pass: saved at %v, want a refresh at %v", got, e.clock)
	}

	// Another identity for the same cluster (a reload restarted its
	// watch): saved again though the revision happens to be the same.
	e.targets[0].Identity.ServiceSelector = "tier=web"
	e.clock = e.clock.Add(DefaultMinInterval)
	e.w.pass(false)
	want := alphaID
	want.ServiceSelector = "tier=web"
	if _, err := Load(e.dir, want, time.Hour, e.clock); err != nil {
		t.Errorf("the new identity was not saved: %v", err)
	}
}

// TestWriterTooBig: a state past the cap removes the older file, so that a
// boot does not serve a state older than the last one seen, and is said
// once.
func TestWriterTooBig(t *testing.T) {
	defer func(old int) { maxBytes = old }(maxBytes)
	e := newWriterEnv(t)
	e.set(1)
	e.w.pass(false)
	if e.savedAt(t).IsZero() {
		t.Fatal("not saved")
	}
	maxBytes = 100
	for i := range 3 {
		e.set(uint64(2 + i))
		e.clock = e.clock.Add(DefaultMinInterval)
		e.w.pass(false)
	}
	if _, err := os.Stat(Path(e.dir, "alpha")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the older file stays: %v", err)
	}
	s := e.w.Saved("alpha")
	var big *TooBigError
	if !errors.As(s.Err, &big) || s.Errors != 3 {
		t.Errorf("Saved %+v, want 3 errors, the last too big", s)
	}
	if n := strings.Count(e.log.String(), "could not save"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, e.log)
	}
	maxBytes = MaxBytes
	e.set(9)
	e.clock = e.clock.Add(DefaultMinInterval)
	e.w.pass(false)
	if s := e.w.Saved("alpha"); s.Err != nil || !s.At.Equal(e.clock) || !strings.Contains(e.log.String(), "saved the cluster's last known state again") {
		t.Errorf("after the state fits again: %+v\n%s", s, e.log)
	}
}

// TestWriterRun: Run saves when poked, and once more when it ends; the
// file of a cluster no longer configured goes.
func TestWriterRun(t *testing.T) {
	e := newWriterEnv(t)
	if err := os.WriteFile(Path(e.dir, "gone"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.set(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.w.Run(ctx); close(done) }()
	e.w.Poke()
	deadline := time.Now().Add(5 * time.Second)
	for e.w.Saved("alpha").At.IsZero() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e.w.Saved("alpha").At.IsZero() {
		t.Fatal("a poke saved nothing")
	}
	if _, err := os.Stat(Path(e.dir, "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file of a cluster no longer configured stays: %v", err)
	}
	e.set(2)
	cancel()
	<-done
	objs, rev, _ := e.src.Export("alpha")
	if rev != 2 || len(objs.Services) == 0 {
		t.Fatal("fake")
	}
	if e.w.written["alpha"].rev != 2 {
		t.Error("the change made before the end was not saved at the end")
	}
}
