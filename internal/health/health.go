// Package health answers /healthz, /livez and /readyz the way kube-proxy
// answers its healthz: the daemon is healthy unless a change has waited too
// long for a successful sync, which catches a datapath that silently stopped
// being programmed (a broken iptables, a sync that keeps failing) while the
// process itself looks fine.
package health

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Tracker follows the sync loop. The daemon calls QueuedUpdate for every
// change that needs a sync, SyncStarted when a sync takes its snapshot of
// the desired state, and SyncDone when it ends.
type Tracker struct {
	clock   clock.PassiveClock
	timeout time.Duration

	mu sync.Mutex
	// queued is when the oldest change still waiting for a sync to start
	// was queued; inFlight, that of the oldest change the running sync
	// holds. Kept apart so that a change queued while a sync runs is not
	// taken as done when that sync succeeds: kube-proxy keeps one time,
	// and so reports healthy while such a change keeps failing.
	queued, inFlight time.Time
	lastUpdated      time.Time // last successful sync
	ready            bool
}

// NewTracker makes a tracker that turns unhealthy when a change waits
// longer than timeout; kube-proxy uses twice its sync period. A nil clock is
// the real one.
func NewTracker(timeout time.Duration, clk clock.PassiveClock) *Tracker {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Tracker{clock: clk, timeout: timeout}
}

// QueuedUpdate records that the desired state changed and a sync must
// follow.
func (t *Tracker) QueuedUpdate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.queued.IsZero() {
		t.queued = t.clock.Now()
	}
}

// SyncStarted records that a sync is about to take its snapshot: every
// change queued so far is in it.
func (t *Tracker) SyncStarted() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inFlight = oldest(t.inFlight, t.queued)
	t.queued = time.Time{}
}

// SyncDone records the end of the sync: on success its changes are
// programmed; on failure they wait on, from when they were first queued.
func (t *Tracker) SyncDone(ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		t.lastUpdated = t.clock.Now()
	} else {
		t.queued = oldest(t.queued, t.inFlight)
	}
	t.inFlight = time.Time{}
}

// SetReady records that the first sync in which the clusters were synced
// (or the grace for unreachable ones was over) succeeded.
func (t *Tracker) SetReady() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ready = true
}

// Status is the body of every endpoint.
type Status struct {
	// Healthy is false while a change has waited longer than the timeout.
	Healthy bool `json:"healthy"`
	// Ready is what /readyz answers: healthy, and the first full picture
	// of the clusters programmed.
	Ready bool `json:"ready"`
	// LastUpdated is the end of the last successful sync, absent before
	// the first.
	LastUpdated *time.Time `json:"lastUpdated,omitempty"`
	CurrentTime time.Time  `json:"currentTime"`
	// PendingSince is when the oldest change not yet programmed was
	// queued, absent when there is none.
	PendingSince *time.Time `json:"pendingSince,omitempty"`
}

// Status returns the current state.
func (t *Tracker) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	st := Status{CurrentTime: now, Healthy: true}
	if p := oldest(t.queued, t.inFlight); !p.IsZero() {
		st.PendingSince = &p
		st.Healthy = now.Sub(p) < t.timeout
	}
	if !t.lastUpdated.IsZero() {
		last := t.lastUpdated
		st.LastUpdated = &last
	}
	st.Ready = t.ready && st.Healthy
	return st
}

// Handler serves /healthz and /livez (the same: there is no node whose
// eligibility would tell them apart, as in kube-proxy) and /readyz, each
// 200 or 503 with the Status as JSON.
func (t *Tracker) Handler() http.Handler {
	mux := http.NewServeMux()
	healthz := func(w http.ResponseWriter, _ *http.Request) {
		st := t.Status()
		write(w, st, st.Healthy)
	}
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/livez", healthz)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := t.Status()
		write(w, st, st.Ready)
	})
	return mux
}

func write(w http.ResponseWriter, st Status, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(st) // the client went away: nothing to do
}

// oldest returns the earlier of two times, ignoring zero ones.
func oldest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
