// Package syncrunner runs one function, the sync, whenever asked, one call
// at a time: requests that arrive while a run is under way merge into the
// next run, which starts once that one has ended and settled for a bounded
// fraction of its duration (pace.go). A request after a quiet period runs at
// once. An optional minimum interval between the starts of two runs is a
// floor on top of that, as kube-proxy's --iptables-min-sync-period. A failed
// run is retried with a growing backoff. This is what turns a burst of 1,000
// object changes into a handful of kernel transactions while a lone change
// is applied at once.
//
// Like kube-proxy's BoundedFrequencyRunner it also runs at least every
// maximum interval, asked or not; unlike it, a run that was asked for does
// not postpone that periodic run, and the function is told which run is
// the periodic one (the daemon makes it a full sync).
package syncrunner

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// Run tells the function why it runs.
type Run struct {
	// Periodic: the maximum interval has passed since the last periodic
	// run (or since Loop started). Requests merged into this run may have
	// asked for it too.
	Periodic bool
}

// Options are a runner's intervals and clock.
type Options struct {
	// MinInterval is the shortest time between the starts of two runs; 0
	// for none but the settling after each run.
	MinInterval time.Duration
	// MaxInterval is the time from the start of one periodic run to the
	// next; 0 for none. Runs asked for in between do not postpone it:
	// a periodic run that repairs what changed behind our back must come
	// even while requests never stop.
	MaxInterval time.Duration
	// MaxBackoff caps the wait before a failed run is retried, which
	// starts at MinInterval or minBackoff, the longer, and doubles.
	MaxBackoff time.Duration
	// Clock is nil for the real one; tests give a fake.
	Clock clock.Clock
}

// Runner calls its function, one call at a time.
type Runner struct {
	fn   func(ctx context.Context, run Run) error
	opt  Options
	trig chan struct{}
	// ran, when set, is called after each run once the loop has taken
	// its end time: tests wait for it before they move the fake clock,
	// which would otherwise lengthen the run they measure.
	ran func()
}

// New makes a runner for fn.
func New(fn func(ctx context.Context, run Run) error, opt Options) *Runner {
	if opt.Clock == nil {
		opt.Clock = clock.RealClock{}
	}
	opt.MaxBackoff = max(opt.MaxBackoff, opt.MinInterval, minBackoff)
	return &Runner{fn: fn, opt: opt, trig: make(chan struct{}, 1)}
}

// Trigger asks for a run. It never blocks; requests merge.
func (r *Runner) Trigger() {
	select {
	case r.trig <- struct{}{}:
	default:
	}
}

// Loop runs until ctx is done. The first run happens at once.
func (r *Runner) Loop(ctx context.Context) {
	clk := r.opt.Clock
	var (
		earliest time.Time // no run starts before: the last one's pace
		backoff  time.Duration
		retry    clock.Timer      // set while a failed run waits for its retry
		periodic <-chan time.Time // fires when the periodic run is due; nil once it did
		due      bool             // the next run is the periodic one
	)
	arm := func() {
		if r.opt.MaxInterval > 0 {
			periodic = clk.After(r.opt.MaxInterval)
		}
	}
	arm()
	r.Trigger()
	for {
		if retry != nil {
			// Requests and the periodic run wait for the retry, which
			// serves them: with no minimum interval they would otherwise
			// repeat a failing full sync as often as changes come.
			select {
			case <-ctx.Done():
				retry.Stop()
				return
			case <-retry.C():
			}
			retry = nil
		} else {
			select {
			case <-ctx.Done():
				return
			case <-r.trig:
			case <-periodic:
				due, periodic = true, nil
			}
		}
		if wait := earliest.Sub(clk.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-clk.After(wait):
			}
		}
		// Requests, and the periodic run, that came while waiting are
		// served by this run.
		select {
		case <-r.trig:
		default:
		}
		select {
		case <-periodic:
			due, periodic = true, nil
		default:
		}
		run := Run{Periodic: due}
		start := clk.Now()
		if due {
			due = false
			arm()
		}
		err := r.fn(ctx, run)
		earliest = nextStart(start, clk.Now(), r.opt.MinInterval)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			backoff = min(max(2*backoff, r.opt.MinInterval, minBackoff), r.opt.MaxBackoff)
			retry = clk.NewTimer(backoff)
		default:
			backoff = 0
		}
		if r.ran != nil {
			r.ran()
		}
	}
}
