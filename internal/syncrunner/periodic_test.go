package syncrunner

import (
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// The maximum interval: a periodic run at least every MaxInterval, counted
// from the last periodic run, whatever was asked for in between.

func periodicRunner(t *testing.T, rec *recorder) (*Runner, *testingclock.FakeClock) {
	t.Helper()
	return start(t, rec, Options{MinInterval: time.Second, MaxInterval: 10 * time.Second, MaxBackoff: time.Minute})
}

// waitRunAs waits for a run and checks whether it was the periodic one.
func waitRunAs(t *testing.T, rec *recorder, periodic bool) {
	t.Helper()
	waitRun(t, rec)
	rec.mu.Lock()
	got := rec.last.Periodic
	rec.mu.Unlock()
	if got != periodic {
		t.Fatalf("run %d: Periodic = %v, want %v", rec.count(), got, periodic)
	}
}

// waitForWaiters lets the loop reach a clock wait when another one (the
// periodic run's) is always there.
func waitForWaiters(t *testing.T, clk *testingclock.FakeClock, n int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for clk.Waiters() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d clock waiters, want %d", clk.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPeriodicRunWithoutRequests(t *testing.T) {
	rec := newRecorder()
	_, clk := periodicRunner(t, rec)
	waitRunAs(t, rec, false) // the first run was asked for
	for range 3 {
		clk.Step(10*time.Second - time.Millisecond)
		noRun(t, rec)
		clk.Step(time.Millisecond)
		waitRunAs(t, rec, true)
	}
}

// TestRequestedRunDoesNotPostponePeriodic: the periodic run comes at its
// time even when a requested run was just before; a busy cluster must not
// put it off forever.
func TestRequestedRunDoesNotPostponePeriodic(t *testing.T) {
	rec := newRecorder()
	r, clk := periodicRunner(t, rec)
	waitRunAs(t, rec, false) // t=0
	for range 2 {
		clk.Step(3 * time.Second)
		r.Trigger()
		waitRunAs(t, rec, false) // at t=3s, then t=6s
	}
	clk.Step(4*time.Second - time.Millisecond)
	noRun(t, rec)
	clk.Step(time.Millisecond)
	waitRunAs(t, rec, true) // t=10s
}

// TestPeriodicRunKeepsMinInterval: a periodic run that comes due right
// after a run waits for the minimum interval, and requests that arrive
// meanwhile merge into it.
func TestPeriodicRunKeepsMinInterval(t *testing.T) {
	rec := newRecorder()
	r, clk := periodicRunner(t, rec)
	waitRunAs(t, rec, false) // t=0
	clk.Step(9500 * time.Millisecond)
	r.Trigger()
	waitRunAs(t, rec, false) // t=9.5s
	clk.Step(500 * time.Millisecond)
	waitForWaiters(t, clk, 1) // due at t=10s, waiting for t=10.5s
	r.Trigger()
	noRun(t, rec)
	clk.Step(500 * time.Millisecond)
	waitRunAs(t, rec, true)
	noRun(t, rec)
	if got := rec.count(); got != 3 {
		t.Fatalf("runs = %d, want 3", got)
	}
	// The next one is counted from this one's start, t=10.5s.
	clk.Step(10*time.Second - time.Millisecond)
	noRun(t, rec)
	clk.Step(time.Millisecond)
	waitRunAs(t, rec, true)
}

// TestRetryOfPeriodicRun: a failed periodic run is retried with the
// backoff as any other, and the retry is not periodic: the next periodic
// run keeps its time.
func TestRetryOfPeriodicRun(t *testing.T) {
	rec := newRecorder()
	_, clk := periodicRunner(t, rec)
	waitRunAs(t, rec, false)
	rec.mu.Lock()
	rec.fail = 1
	rec.mu.Unlock()
	clk.Step(10 * time.Second)
	waitRunAs(t, rec, true)   // fails
	waitForWaiters(t, clk, 2) // the next periodic run and the retry
	clk.Step(time.Second)
	waitRunAs(t, rec, false)
	clk.Step(9*time.Second - time.Millisecond)
	noRun(t, rec)
	clk.Step(time.Millisecond)
	waitRunAs(t, rec, true) // t=20s
}
