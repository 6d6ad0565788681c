package syncrunner

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

type recorder struct {
	mu    sync.Mutex
	runs  int
	last  Run
	fail  int // fail this many runs first
	ran   chan struct{}
	block chan struct{}
}

func (r *recorder) fn(ctx context.Context, run Run) error {
	r.mu.Lock()
	r.runs++
	r.last = run
	fail := r.fail > 0
	if fail {
		r.fail--
	}
	r.mu.Unlock()
	if r.block != nil {
		<-r.block
	}
	r.ran <- struct{}{}
	if fail {
		return errors.New("boom")
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs
}

func waitRun(t *testing.T, rec *recorder) {
	t.Helper()
	select {
	case <-rec.ran:
	case <-time.After(5 * time.Second):
		t.Fatal("no run")
	}
}

func noRun(t *testing.T, rec *recorder) {
	t.Helper()
	select {
	case <-rec.ran:
		t.Fatal("unexpected run")
	case <-time.After(50 * time.Millisecond):
	}
}

// waitForWaiter lets the loop reach its clock wait before the test steps time.
func waitForWaiter(t *testing.T, clk *testingclock.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("runner never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBurstMergesIntoOneRun(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1000, 0))
	rec := &recorder{ran: make(chan struct{}, 100)}
	r := New(rec.fn, Options{MinInterval: time.Second, MaxBackoff: time.Minute, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Loop(ctx)

	waitRun(t, rec) // the initial run is immediate
	for i := 0; i < 1000; i++ {
		r.Trigger()
	}
	waitForWaiter(t, clk) // inside the min-interval wait
	noRun(t, rec)
	clk.Step(time.Second)
	waitRun(t, rec)
	noRun(t, rec)
	if got := rec.count(); got != 2 {
		t.Fatalf("1,000 triggers after the first run gave %d runs in all, want 2", got)
	}
}

func TestLoneChangeAfterQuietRunsAtOnce(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1000, 0))
	rec := &recorder{ran: make(chan struct{}, 10)}
	r := New(rec.fn, Options{MinInterval: time.Second, MaxBackoff: time.Minute, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Loop(ctx)
	waitRun(t, rec)
	clk.Step(5 * time.Second)
	r.Trigger()
	waitRun(t, rec) // no clock step needed
}

func TestFailureRetriesWithBackoff(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1000, 0))
	rec := &recorder{ran: make(chan struct{}, 10), fail: 3}
	r := New(rec.fn, Options{MinInterval: time.Second, MaxBackoff: 4 * time.Second, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Loop(ctx)
	waitRun(t, rec) // fails, retry in 1s
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		waitForWaiter(t, clk)
		clk.Step(d - time.Millisecond)
		noRun(t, rec)
		clk.Step(time.Millisecond)
		waitRun(t, rec)
	}
	// The fourth run succeeded: no more retries.
	clk.Step(time.Hour)
	noRun(t, rec)
	if got := rec.count(); got != 4 {
		t.Fatalf("runs = %d, want 4", got)
	}
}
