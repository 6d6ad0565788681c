package daemon

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
)

// fakeComponent is a component that writes down its calls.
type fakeComponent struct {
	startErr, syncErr error
	synced            chan struct{} // a send per Sync, when set

	mu    sync.Mutex
	calls []string
}

func (r *fakeComponent) note(call string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
}

func (r *fakeComponent) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *fakeComponent) Start(context.Context) error { r.note("start"); return r.startErr }
func (r *fakeComponent) Stop()                       { r.note("stop") }
func (r *fakeComponent) Sync(_ context.Context, st *model.State) error {
	if st == nil {
		r.note("sync without a state")
	} else {
		r.note("sync")
	}
	if r.synced != nil {
		r.synced <- struct{}{}
	}
	return r.syncErr
}

// TestComponentsInRun: Run starts a component before the first sync, syncs
// it with the desired state, and stops it when it returns.
func TestComponentsInRun(t *testing.T) {
	d, _ := testDaemon(t)
	c := &fakeComponent{synced: make(chan struct{}, 10)}
	d.components = append(d.components, c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-c.synced:
	case <-time.After(10 * time.Second):
		t.Fatal("the component was never synced")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := c.got(); len(got) < 3 || got[0] != "start" || got[1] != "sync" || got[len(got)-1] != "stop" {
		t.Errorf("calls %q, want start, sync..., stop", got)
	}
}

// TestComponentSyncFails: a component's failure fails the sync, and the
// components after it are synced all the same.
func TestComponentSyncFails(t *testing.T) {
	d, _ := testDaemon(t)
	bad := &fakeComponent{syncErr: errors.New("dns: cannot bind")}
	good := &fakeComponent{}
	d.components = append(d.components, bad, good)
	err := d.loop.sync(t.Context(), syncrunner.Run{})
	if err == nil || !strings.Contains(err.Error(), "dns: cannot bind") {
		t.Errorf("sync: %v, want the component's error", err)
	}
	if got := good.got(); !slices.Equal(got, []string{"sync"}) {
		t.Errorf("the component after the failing one: calls %q", got)
	}
	if last := d.LastSync(); last.Err == nil {
		t.Errorf("last sync %+v, want it failed", last)
	}
}

// TestStartComponentsAllOrNone: when a component cannot start, those
// started before it are stopped and the start fails.
func TestStartComponentsAllOrNone(t *testing.T) {
	d, _ := testDaemon(t)
	first, second := &fakeComponent{}, &fakeComponent{startErr: errors.New("dns: address in use")}
	third := &fakeComponent{}
	d.components = []component{first, second, third}
	if err := d.startComponents(t.Context()); err == nil || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("startComponents: %v", err)
	}
	if got := first.got(); !slices.Equal(got, []string{"start", "stop"}) {
		t.Errorf("first: %q, want started and stopped", got)
	}
	if got := third.got(); len(got) != 0 {
		t.Errorf("third: %q, want never started", got)
	}
}
