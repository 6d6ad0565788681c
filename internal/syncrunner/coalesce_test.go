package syncrunner

import (
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// Coalescing with no minimum interval, the default: requests that come
// while a run is under way merge into the next run, which settles after
// the last one's end for a quarter of its duration, at most maxSettle; a
// request after a quiet period runs at once.

// holding starts a runner whose runs last as long as the test steps the
// clock between their start and release.
func holding(t *testing.T, opt Options) (*Runner, *testingclock.FakeClock, *recorder) {
	t.Helper()
	rec := newRecorder()
	rec.hold = make(chan struct{})
	r, clk := start(t, rec, opt)
	return r, clk, rec
}

// release ends the run under way and waits for the loop to take its end.
func release(t *testing.T, rec *recorder) {
	t.Helper()
	rec.hold <- struct{}{}
	waitRun(t, rec)
}

func TestZeroMinIntervalLoneChangeRunsAtOnce(t *testing.T) {
	for _, quiet := range []time.Duration{maxSettle, time.Second, time.Hour} {
		r, clk, rec := holding(t, Options{MaxBackoff: time.Minute})
		waitStarted(t, rec)
		clk.Step(30 * time.Second) // the longest run settles the most
		release(t, rec)
		clk.Step(quiet)
		r.Trigger()
		waitStarted(t, rec) // no clock step: the change waits for nothing
		release(t, rec)
		if got := rec.count(); got != 2 {
			t.Fatalf("after %s quiet: runs = %d, want 2", quiet, got)
		}
	}
}

func TestRequestsDuringRunMergeIntoNext(t *testing.T) {
	r, clk, rec := holding(t, Options{MaxBackoff: time.Minute})
	waitStarted(t, rec)
	for range 5 {
		clk.Step(8 * time.Millisecond)
		r.Trigger()
	}
	release(t, rec) // took 40 ms: the next one settles 10 ms
	waitForWaiter(t, clk)
	clk.Step(9 * time.Millisecond)
	noRun(t, rec)
	r.Trigger() // while settling: merges too
	clk.Step(time.Millisecond)
	waitStarted(t, rec)
	release(t, rec)
	noRun(t, rec)
	if got := rec.count(); got != 2 {
		t.Fatalf("runs = %d, want 2: the first, and one for the 6 requests", got)
	}
}

// TestSettleIsBounded: the settling is a fraction of the last run's
// duration, and no more than maxSettle however long that run took.
func TestSettleIsBounded(t *testing.T) {
	for _, c := range []struct{ run, settle time.Duration }{
		{40 * time.Millisecond, 10 * time.Millisecond},
		{400 * time.Millisecond, 100 * time.Millisecond},
		{30 * time.Second, 100 * time.Millisecond},
	} {
		r, clk, rec := holding(t, Options{MaxBackoff: time.Minute})
		waitStarted(t, rec)
		clk.Step(c.run)
		r.Trigger()
		release(t, rec)
		waitForWaiter(t, clk)
		clk.Step(c.settle - time.Millisecond)
		select {
		case <-rec.started:
			t.Fatalf("after a run of %s: the next one started before %s", c.run, c.settle)
		case <-time.After(50 * time.Millisecond):
		}
		clk.Step(time.Millisecond)
		waitStarted(t, rec)
		release(t, rec)
	}
}

// TestMinIntervalIsAFloor: an explicit minimum interval holds the next run
// past the settling, counted from the last run's start.
func TestMinIntervalIsAFloor(t *testing.T) {
	r, clk, rec := holding(t, Options{MinInterval: time.Second, MaxBackoff: time.Minute})
	waitStarted(t, rec)
	clk.Step(40 * time.Millisecond)
	r.Trigger()
	release(t, rec)
	waitForWaiter(t, clk)
	clk.Step(960*time.Millisecond - time.Millisecond)
	noRun(t, rec)
	clk.Step(time.Millisecond)
	waitStarted(t, rec)
	release(t, rec)
}

// TestBurstOfThousandIsAHandfulOfRuns: 1,000 requests spread over 100 ms,
// as a relist or a rolling restart delivers its objects, while each run
// takes 20 ms. Runs at 0, 25, 50, 75 and 100 ms serve them all: 5. One
// run per request would be 1,000; without the settling, a run every
// 20 ms, 6.
func TestBurstOfThousandIsAHandfulOfRuns(t *testing.T) {
	const (
		requests = 1000
		every    = 100 * time.Microsecond
		runTakes = 20 * time.Millisecond
		step     = 100 * time.Microsecond
	)
	r, clk, rec := holding(t, Options{MaxBackoff: time.Minute})
	waitStarted(t, rec)
	release(t, rec) // the first run, before the burst
	clk.Step(time.Second)

	begin := clk.Now()
	next := 0 // the next request to make
	ask := func() {
		for next < requests && !begin.Add(time.Duration(next)*every).After(clk.Now()) {
			r.Trigger()
			next++
		}
	}
	lastStart := time.Time{}
	ask() // the first request finds the runner idle
	waitStarted(t, rec)
	for {
		lastStart = clk.Now()
		pending := false
		for d := time.Duration(0); d < runTakes; d += step {
			clk.Step(step)
			before := next
			ask()
			pending = pending || next > before
		}
		release(t, rec)
		if !pending {
			break
		}
		// Requests keep coming while the runner settles.
		for !startedOrWaiting(t, rec, clk) {
			clk.Step(step)
			if clk.HasWaiters() {
				ask()
			}
		}
	}
	if next != requests {
		t.Fatalf("the runs ended with %d requests of %d made", next, requests)
	}
	if last := begin.Add((requests - 1) * every); lastStart.Before(last) {
		t.Fatalf("the last run started at +%s, before the last request at +%s", lastStart.Sub(begin), last.Sub(begin))
	}
	noRun(t, rec)
	if got := rec.count() - 1; got > 5 {
		t.Fatalf("1,000 requests over 100 ms gave %d runs, want at most 5", got)
	}
}

// startedOrWaiting waits until a run has started (true) or the runner
// waits on the clock (false).
func startedOrWaiting(t *testing.T, rec *recorder, clk *testingclock.FakeClock) bool {
	t.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		select {
		case <-rec.started:
			return true
		default:
		}
		if clk.HasWaiters() {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the runner neither ran nor waited on the clock")
	return false
}
