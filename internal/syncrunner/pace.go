package syncrunner

import "time"

// How soon a run may follow the one before. Requests that arrive while a
// run is under way merge (Trigger); the next run starts once that one has
// ended and settled for a fraction of its duration, so that the tail of a
// burst joins it rather than making a run of its own. A request after a
// quiet period finds nothing to wait for. Nothing here is a fixed delay: a
// lone change costs nothing, and a burst costs a handful of runs whatever
// its size.
const (
	// settleFraction: a run settles for 1/settleFraction of the duration
	// of the run before it. Under a stream of requests that never stops,
	// runs shorter than 4 × maxSettle then take at most 4/5 of the time,
	// and what they leave is for the watches and the DNS server that share
	// the host's cores.
	settleFraction = 4
	// maxSettle caps the settling: a full sync of a large table takes
	// seconds, and the change after it must not wait a quarter of that.
	maxSettle = 100 * time.Millisecond
	// minBackoff is the least wait before a failed run is retried, whatever
	// MinInterval is: a sync refused at once must not be repeated as fast
	// as it is refused.
	minBackoff = 100 * time.Millisecond
)

// settle is how long a run that took d holds the next one after its end.
func settle(d time.Duration) time.Duration {
	return min(max(d, 0)/settleFraction, maxSettle)
}

// nextStart is the earliest start of the run after one that started at
// start and ended at end: minInterval after its start, and its settling
// after its end.
func nextStart(start, end time.Time, minInterval time.Duration) time.Time {
	floor := start.Add(minInterval)
	if s := end.Add(settle(end.Sub(start))); s.After(floor) {
		return s
	}
	return floor
}
