package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	testingclock "k8s.io/utils/clock/testing"
)

// seen records what a link tells its watcher.
type seen struct {
	mu       sync.Mutex
	answers  []error
	breakage []error
}

func (s *seen) answered(_ feed, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers = append(s.answers, err)
}

func (s *seen) broke(_ feed, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakage = append(s.breakage, err)
}

func (s *seen) snapshot() (answers, breakage []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.answers...), append([]error(nil), s.breakage...)
}

// switchable is an apiserver that refuses connections until it is up.
type switchable struct {
	up               atomic.Bool
	probes, requests atomic.Int32
}

func (s *switchable) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == "/readyz" {
		s.probes.Add(1)
	} else {
		s.requests.Add(1)
	}
	if !s.up.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

func get(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// A request to an apiserver that does not answer waits, while the apiserver
// is probed, and goes as soon as the probe is answered.
func TestLinkHoldsRequestsUntilTheAPIServerAnswers(t *testing.T) {
	api, obs := &switchable{}, &seen{}
	l := newLink(api, "https://apiserver/readyz", obs, slog.New(slog.DiscardHandler))
	l.t = timings{silent: time.Hour, tick: 10 * time.Millisecond, probeEvery: 50 * time.Millisecond,
		probeTimeout: 50 * time.Millisecond, retryEvery: time.Hour}
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan struct{})
	go func() { l.run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()

	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := l.RoundTrip(get(t, "https://apiserver/api/v1/services?watch=true"))
		done <- result{resp, err}
	}()
	const down = 500 * time.Millisecond
	select {
	case r := <-done:
		t.Fatalf("a request to an apiserver that refuses returned %v, %v; want it held", r.resp, r.err)
	case <-time.After(down):
	}
	if l.downSince().IsZero() {
		t.Error("no outage recorded")
	}
	if n := api.requests.Load(); n != 1 {
		t.Errorf("%d attempts while down, want 1: the probe decides when to try again", n)
	}
	// One probe per probeEvery at most (TestLinkProbePacing counts them
	// exactly); a busy machine may run fewer.
	if n := api.probes.Load(); n < 1 || n > 11 {
		t.Errorf("%d probes in %s, want one per %s", n, down, l.t.probeEvery)
	}

	back := time.Now()
	api.up.Store(true)
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the request was not let go once the apiserver answered")
	}
	took := time.Since(back)
	t.Logf("request let go %s after the apiserver answered (probe every %s)", took.Round(time.Millisecond), l.t.probeEvery)
	if r.err != nil || r.resp.StatusCode != http.StatusOK {
		t.Fatalf("request ended with %v, %v", r.resp, r.err)
	}
	r.resp.Body.Close()
	if took > l.t.probeEvery+time.Second {
		t.Errorf("let go after %s, want within a probe period", took)
	}
	if n := l.restartCounts()[RestartAPIServerBack]; n != 1 {
		t.Errorf("restarts[%s] = %d, want 1", RestartAPIServerBack, n)
	}
	if !l.downSince().IsZero() {
		t.Error("the outage did not end")
	}
	if answers, _ := obs.snapshot(); len(answers) != 2 || answers[0] == nil || answers[1] != nil {
		t.Errorf("the watcher was told %v, want the refusal, then the answer", answers)
	}
}

// The probe costs one request every probeEvery while the apiserver does not
// answer; the held requests try on their own every retryEvery.
func TestLinkProbePacing(t *testing.T) {
	api := &switchable{}
	fc := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	l := newLink(api, "https://apiserver/readyz", &seen{}, slog.New(slog.DiscardHandler))
	l.clock = fc
	refused := errors.New("connection refused")
	l.down(refused)
	tries := 0
	for range 120 {
		fc.Step(time.Second)
		l.probeIfDown(t.Context())
		l.mu.Lock()
		open := l.isReady()
		l.mu.Unlock()
		if open {
			// What a held request that is refused again does.
			tries++
			l.down(refused)
		}
	}
	if n := api.probes.Load(); n != 60 {
		t.Errorf("%d probes in 120 s, want 60 (one per %s)", n, l.t.probeEvery)
	}
	if tries != 4 {
		t.Errorf("held requests let through %d times in 120 s, want 4 (every %s)", tries, l.t.retryEvery)
	}
	if n := api.requests.Load(); n != 0 {
		t.Errorf("the probe sent %d requests other than /readyz", n)
	}
}

// Any answer but a 5xx or 429 means the apiserver is there.
func TestProbeAnswers(t *testing.T) {
	for code, answers := range map[int]bool{200: true, 401: true, 403: true, 404: true, 429: false, 500: false, 503: false} {
		l := newLink(roundTripper{code: code}, "https://apiserver/readyz", &seen{}, slog.New(slog.DiscardHandler))
		if err := l.probe(t.Context()); (err == nil) != answers {
			t.Errorf("probe answered %d: err = %v, want answering %v", code, err, answers)
		}
	}
	l := newLink(roundTripper{err: syscall.ECONNREFUSED}, "https://apiserver/readyz", &seen{}, slog.New(slog.DiscardHandler))
	if err := l.probe(t.Context()); err == nil {
		t.Error("a refused probe counts as an answer")
	}
}

// stalling answers a watch with one event and then nothing, and a list
// with nothing at all, until the client goes away.
func stalling() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"type":"BOOKMARK","object":{}}`)
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	}))
}

// A watch that hears nothing for timings.silent ends, to the reflector, as
// a watch the server closed, so that it watches again at once; a list that
// is not answered is tried again once the apiserver answers.
func TestLinkAbandonsSilentRequests(t *testing.T) {
	srv := stalling()
	defer srv.Close()
	fc := testingclock.NewFakeClock(time.Now())
	obs := &seen{}
	l := newLink(srv.Client().Transport, srv.URL+"/readyz", obs, slog.New(slog.DiscardHandler))
	l.clock = fc

	resp, err := l.RoundTrip(get(t, srv.URL+"/api/v1/services?watch=true"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 512)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				ended <- err
				return
			}
		}
	}()
	fc.Step(l.t.silent - time.Second)
	l.abandonSilent()
	select {
	case err := <-ended:
		t.Fatalf("watch ended before it was silent for %s: %v", l.t.silent, err)
	case <-time.After(100 * time.Millisecond):
	}
	fc.Step(time.Second)
	l.abandonSilent()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Errorf("a silent watch ended with %v, want io.EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a silent watch was not ended")
	}
	if n := l.restartCounts()[RestartSilent]; n != 1 {
		t.Errorf("restarts[%s] = %d, want 1", RestartSilent, n)
	}
	if _, broke := obs.snapshot(); len(broke) != 1 || !errors.Is(broke[0], errSilent) {
		t.Errorf("the watcher was told %v, want one silent watch", broke)
	}

	// A list whose answer does not come.
	type result struct {
		again bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		_, again, err := l.attempt(get(t, srv.URL+"/api/v1/services"), false)
		done <- result{again, err}
	}()
	waitFor(t, "the list in flight", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.inflight) == 1
	})
	fc.Step(l.t.silent)
	l.abandonSilent()
	select {
	case r := <-done:
		if !r.again || !errors.Is(r.err, errSilent) {
			t.Errorf("unanswered list: again = %v, err = %v; want it held for the probe, as silent", r.again, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an unanswered list was not abandoned")
	}
	if l.downSince().IsZero() {
		t.Error("an unanswered list did not start an outage")
	}
	if n := l.restartCounts()[RestartSilent]; n != 2 {
		t.Errorf("restarts[%s] = %d, want 2", RestartSilent, n)
	}
}

// lastHeard is the oldest feed's last word, once every feed has one.
func TestLinkLastHeard(t *testing.T) {
	srv := stalling()
	defer srv.Close()
	fc := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	l := newLink(srv.Client().Transport, srv.URL+"/readyz", &seen{}, slog.New(slog.DiscardHandler))
	l.clock = fc
	feeds := []feed{{resServices, ""}, {resEndpointSlices, ""}}
	watch := func(path string) *http.Response {
		resp, err := l.RoundTrip(get(t, srv.URL+path+"?watch=true"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Body.Read(make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	svcs := watch("/api/v1/services")
	if got := l.lastHeard(feeds); !got.IsZero() {
		t.Errorf("lastHeard = %v before every feed was heard", got)
	}
	first := fc.Now()
	fc.Step(time.Minute)
	slices := watch("/apis/discovery.k8s.io/v1/endpointslices")
	if got := l.lastHeard(feeds); !got.Equal(first) {
		t.Errorf("lastHeard = %v, want the older feed's %v", got, first)
	}
	// A finished request keeps its word.
	svcs.Body.Close()
	slices.Body.Close()
	if got := l.lastHeard(feeds); !got.Equal(first) {
		t.Errorf("lastHeard = %v after the watches ended, want %v", got, first)
	}
}

// A silent watch is made again from the resource version the reflector
// has: no list, and the watcher stays synced and connected.
func TestWatcherRestartsASilentWatch(t *testing.T) {
	// fakeAPIServer's watches send nothing once their initial events are
	// through: no bookmark ever comes.
	api := &fakeAPIServer{stop: make(chan struct{})}
	srv := httptest.NewServer(api)
	defer srv.Close()
	w := watcherOf(t, srv.URL, &sink{slices: map[string]*discoveryv1.EndpointSlice{}})
	// More than the second under which the reflector takes a watch that
	// ends without an event for a failure, and lists again.
	w.link.t.silent, w.link.t.tick = 1500*time.Millisecond, 100*time.Millisecond
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	waitFor(t, "synced and connected", func() bool { st := w.Status(); return st.Synced && st.Connected })
	waitFor(t, "both silent watches made again twice", func() bool {
		return w.Status().Restarts[RestartSilent] >= 4 && api.rewatches.Load() >= 4
	})
	if n := api.lists.Load(); n != 2 {
		t.Errorf("%d lists, want 2 (one per resource): a silent watch must not cost a list", n)
	}
	if st := w.Status(); !st.Synced || st.LastHeard.IsZero() {
		t.Errorf("status %+v", st)
	}
}
