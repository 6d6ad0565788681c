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
	mu   sync.Mutex
	runs int
	last Run
	fail int // fail this many runs first
	// hold, when set, keeps each run going until the test sends on it;
	// the test moves the clock meanwhile, which is the run's duration,
	// and learns of the start on started.
	hold    chan struct{}
	started chan struct{}
	ran     chan struct{} // each run, once the loop has taken its end
}

func newRecorder() *recorder {
	return &recorder{ran: make(chan struct{}, 2000), started: make(chan struct{}, 2000)}
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
	if r.hold != nil {
		r.started <- struct{}{}
		select {
		case <-r.hold:
		case <-ctx.Done():
		}
	}
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

// start runs a runner of rec's function on a fake clock until the test ends.
func start(t *testing.T, rec *recorder, opt Options) (*Runner, *testingclock.FakeClock) {
	t.Helper()
	clk := testingclock.NewFakeClock(time.Unix(1000, 0))
	opt.Clock = clk
	r := New(rec.fn, opt)
	r.ran = func() { rec.ran <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		r.Loop(ctx)
	}()
	return r, clk
}

// patience is how long the test waits for the runner's goroutine, which
// a loaded machine may schedule late; the clock it runs on is the fake one.
const patience = 30 * time.Second

func waitRun(t *testing.T, rec *recorder) {
	t.Helper()
	select {
	case <-rec.ran:
	case <-time.After(patience):
		t.Fatal("no run")
	}
}

func waitStarted(t *testing.T, rec *recorder) {
	t.Helper()
	select {
	case <-rec.started:
	case <-time.After(patience):
		t.Fatal("no run started")
	}
}

// noRun fails if a run ends soon. A run that should not happen at all
// would end within this on any machine; a late one is caught by the
// count checked after.
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
	deadline := time.Now().Add(patience)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("runner never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBurstMergesIntoOneRun(t *testing.T) {
	rec := newRecorder()
	r, clk := start(t, rec, Options{MinInterval: time.Second, MaxBackoff: time.Minute})

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
	rec := newRecorder()
	r, clk := start(t, rec, Options{MinInterval: time.Second, MaxBackoff: time.Minute})
	waitRun(t, rec)
	clk.Step(5 * time.Second)
	r.Trigger()
	waitRun(t, rec) // no clock step needed
}

// TestFailureRetriesWithBackoff: the backoff starts at MinInterval, or
// minBackoff when that is shorter, and doubles. With no minimum interval
// only the backoff keeps a failing sync from being repeated at every
// change: requests must not cut it short, and the retry serves them.
func TestFailureRetriesWithBackoff(t *testing.T) {
	for _, c := range []struct {
		name     string
		opt      Options
		waits    []time.Duration
		requests bool
	}{
		{"from the minimum interval", Options{MinInterval: time.Second, MaxBackoff: 4 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, false},
		{"from minBackoff, requests waiting", Options{MaxBackoff: time.Minute},
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			rec.fail = 3
			r, clk := start(t, rec, c.opt)
			waitRun(t, rec) // fails
			for _, d := range c.waits {
				if c.requests {
					r.Trigger()
					noRun(t, rec)
				}
				waitForWaiter(t, clk)
				clk.Step(d - time.Millisecond)
				if c.requests {
					r.Trigger()
				}
				noRun(t, rec)
				clk.Step(time.Millisecond)
				waitRun(t, rec)
			}
			// The fourth run succeeded: no more retries, and nothing
			// left to serve.
			clk.Step(time.Hour)
			noRun(t, rec)
			if got := rec.count(); got != 4 {
				t.Fatalf("runs = %d, want 4", got)
			}
		})
	}
}
