// Package runner runs one function, the sync, whenever asked, but never more
// often than a minimum interval: requests that arrive while a run is pending
// or too recent merge into one run. A failed run is retried with a growing
// backoff. This is what turns a burst of 1,000 object changes into a handful
// of kernel transactions while a lone change is applied at once.
package runner

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// Runner calls Fn, one call at a time.
type Runner struct {
	fn          func(ctx context.Context) error
	minInterval time.Duration
	maxBackoff  time.Duration
	clock       clock.Clock
	trig        chan struct{}
}

// New makes a runner for fn. minInterval is the shortest time between the
// starts of two runs; maxBackoff caps the wait before retrying a failed run.
func New(fn func(ctx context.Context) error, minInterval, maxBackoff time.Duration, clk clock.Clock) *Runner {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if maxBackoff < minInterval {
		maxBackoff = minInterval
	}
	return &Runner{fn: fn, minInterval: minInterval, maxBackoff: maxBackoff, clock: clk, trig: make(chan struct{}, 1)}
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
	var (
		lastStart time.Time
		backoff   time.Duration
		retry     <-chan time.Time // set while a failed run waits for its retry
	)
	r.Trigger()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.trig:
		case <-retry:
		}
		retry = nil
		if !lastStart.IsZero() {
			if wait := r.minInterval - r.clock.Since(lastStart); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-r.clock.After(wait):
				}
			}
		}
		// Requests that came in while waiting are served by this run.
		select {
		case <-r.trig:
		default:
		}
		lastStart = r.clock.Now()
		if err := r.fn(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, r.minInterval), r.maxBackoff)
			retry = r.clock.After(backoff)
			continue
		}
		backoff = 0
	}
}
