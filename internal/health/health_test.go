package health

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

const syncPeriod = 30 * time.Second

type probe struct {
	t   *testing.T
	h   http.Handler
	clk *testingclock.FakeClock
	tr  *Tracker
}

func newProbe(t *testing.T) *probe {
	clk := testingclock.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	tr := NewTracker(2*syncPeriod, clk)
	return &probe{t: t, h: tr.Handler(), clk: clk, tr: tr}
}

// get returns the status code and body of a path.
func (p *probe) get(path string) (int, Status) {
	p.t.Helper()
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		p.t.Errorf("%s: Content-Type %q", path, ct)
	}
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		p.t.Fatalf("%s: body %q: %v", path, rec.Body.String(), err)
	}
	if !st.CurrentTime.Equal(p.clk.Now()) {
		p.t.Errorf("%s: currentTime %v, want %v", path, st.CurrentTime, p.clk.Now())
	}
	return rec.Code, st
}

// expect checks /healthz, /livez and /readyz.
func (p *probe) expect(what string, healthz, readyz int) {
	p.t.Helper()
	for path, want := range map[string]int{"/healthz": healthz, "/livez": healthz, "/readyz": readyz} {
		if code, st := p.get(path); code != want {
			p.t.Errorf("%s: %s answered %d, want %d (%+v)", what, path, code, want, st)
		}
	}
}

func TestHealthz(t *testing.T) {
	p := newProbe(t)
	p.expect("at start, nothing queued", 200, 503)

	// The first sync counts like any other: the daemon queues its first
	// change at once, and a first sync that never succeeds is unhealthy.
	p.tr.QueuedUpdate()
	p.clk.Step(2*syncPeriod - time.Millisecond)
	p.expect("a change waiting, not for long", 200, 503)
	p.clk.Step(time.Millisecond)
	p.expect("a change waiting for twice the sync period", 503, 503)
	_, st := p.get("/healthz")
	if st.PendingSince == nil || !st.PendingSince.Equal(p.clk.Now().Add(-2*syncPeriod)) || st.LastUpdated != nil || st.Healthy {
		t.Errorf("unhealthy status %+v", st)
	}

	p.tr.SyncStarted()
	p.tr.SyncDone(true)
	p.expect("synced, not ready yet", 200, 503)
	p.tr.SetReady()
	p.expect("synced and ready", 200, 200)
	_, st = p.get("/readyz")
	if st.PendingSince != nil || st.LastUpdated == nil || !st.LastUpdated.Equal(p.clk.Now()) || !st.Ready {
		t.Errorf("healthy status %+v", st)
	}

	// Nothing queued: healthy however long no sync runs.
	p.clk.Step(time.Hour)
	p.expect("quiet for an hour", 200, 200)

	// Syncs that keep failing: the change waits from when it was queued,
	// not from the last attempt.
	p.tr.QueuedUpdate()
	for range 3 {
		p.clk.Step(syncPeriod / 2)
		p.tr.SyncStarted()
		p.tr.SyncDone(false)
	}
	p.expect("failing for 1.5 sync periods", 200, 200)
	p.clk.Step(syncPeriod / 2)
	p.expect("failing for 2 sync periods", 503, 503)
	p.tr.QueuedUpdate() // more changes meanwhile do not reset the wait
	p.tr.SyncStarted()
	p.tr.SyncDone(true)
	p.expect("recovered", 200, 200)
}

// A change queued while a sync runs is not in that sync: its success must
// not count for it.
func TestHealthzChangeDuringSync(t *testing.T) {
	p := newProbe(t)
	p.tr.QueuedUpdate()
	p.tr.SyncStarted()
	p.clk.Step(time.Second)
	p.tr.QueuedUpdate()
	queued := p.clk.Now()
	p.tr.SyncDone(true)
	_, st := p.get("/healthz")
	if st.PendingSince == nil || !st.PendingSince.Equal(queued) {
		t.Fatalf("after the sync, pending since %v, want %v", st.PendingSince, queued)
	}
	// The next sync, which holds it, fails, and so on.
	p.tr.SyncStarted()
	p.tr.SyncDone(false)
	p.clk.Step(2 * syncPeriod)
	p.expect("the later change never programmed", 503, 503)
	p.tr.SyncStarted()
	p.tr.SyncDone(true)
	p.expect("programmed", 200, 503)
}
