package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// link is the way from one watcher's client to its apiserver: every list,
// watch and probe request passes here, outside client-go's own wrappers
// (credentials, user agent). It does three things client-go leaves to
// chance:
//
//   - it reports each request's outcome to the watcher, which is how the
//     watcher knows the apiserver answers: the reflector retries a refused
//     watch without calling its error handler;
//   - while the apiserver does not answer, it holds the requests and
//     probes the apiserver, and lets them go the moment it answers
//     (outage.go). The reflector never sees the refusals, so its backoff,
//     which grows to 30 s with as much again of jitter, never starts;
//   - it abandons a request that hears nothing for timings.silent, which a
//     healthy watch never does, and has it made again.
type link struct {
	next     http.RoundTripper
	probeURL string
	obs      linkObserver
	log      *slog.Logger
	clock    clock.WithTicker
	t        timings

	mu sync.Mutex
	// ready is closed while requests may go; an outage replaces it with an
	// open one, which the probe closes.
	ready chan struct{}
	// outage is when the apiserver stopped answering; zero while it does.
	outage time.Time
	// lastProbe and lastTry are when the probe last ran and when held
	// requests were last let through without it.
	lastProbe, lastTry time.Time
	inflight           map[*request]struct{}
	// heard is, per feed, when its last finished request last heard from
	// the apiserver; the ones in flight keep their own.
	heard    map[feed]time.Time
	restarts map[string]int
}

// linkObserver is told what the link sees of a watcher's feeds.
type linkObserver interface {
	// answered is the outcome of a list or watch request: nil, or why it
	// failed.
	answered(f feed, err error)
	// broke says that the link ended a watch or list of f after the
	// apiserver had answered it; the link has logged why.
	broke(f feed, err error)
}

// timings of a link; tests shorten them.
type timings struct {
	// silent is how long a request may hear nothing from the apiserver
	// before it is abandoned and made again. The apiserver sends every
	// watch a bookmark about once a minute, and answers a list within its
	// request timeout of one minute, so a healthy request is never this
	// silent.
	silent time.Duration
	// tick is how often requests in flight are checked.
	tick time.Duration
	// probeEvery and probeTimeout pace the probe while the apiserver does
	// not answer: at most one request per probeEvery, none while it does.
	probeEvery, probeTimeout time.Duration
	// retryEvery lets held requests try again without the probe, for an
	// apiserver whose /readyz fails but whose API answers: no slower
	// than client-go's own backoff at its cap.
	retryEvery time.Duration
}

var defaultTimings = timings{
	silent:       90 * time.Second,
	tick:         time.Second,
	probeEvery:   2 * time.Second,
	probeTimeout: 2 * time.Second,
	retryEvery:   30 * time.Second,
}

// Why a watch is started again, as kube_outpost_watch_restarts_total's
// reason label says it.
const (
	// RestartSilent: a request heard nothing for timings.silent.
	RestartSilent = "silent"
	// RestartConnectionLost: the connection's health check (an HTTP/2
	// ping, TCP keepalive, TCP_USER_TIMEOUT) found the apiserver gone.
	RestartConnectionLost = "connection_lost"
	// RestartAPIServerBack: a request held while the apiserver did not
	// answer was let go when it answered again.
	RestartAPIServerBack = "apiserver_back"
)

// RestartReasons are every reason, so that each has its series from the
// start.
var RestartReasons = []string{RestartSilent, RestartConnectionLost, RestartAPIServerBack}

// errSilent is the cause of a request the link abandoned.
var errSilent = errors.New("nothing heard from the apiserver")

func newLink(next http.RoundTripper, probeURL string, obs linkObserver, log *slog.Logger) *link {
	ready := make(chan struct{})
	close(ready)
	return &link{
		next: next, probeURL: probeURL, obs: obs, log: log, clock: clock.RealClock{}, t: defaultTimings,
		ready: ready, inflight: map[*request]struct{}{}, heard: map[feed]time.Time{}, restarts: map[string]int{},
	}
}

// request is one request in flight.
type request struct {
	feed   feed
	watch  bool
	ctx    context.Context
	cancel context.CancelCauseFunc
	// last is when the apiserver was last heard from on this request, in
	// Unix nanoseconds: sent, answered, or a byte of the body.
	last atomic.Int64
	// answered is set once the response headers are in.
	answered atomic.Bool
}

func (l *link) RoundTrip(req *http.Request) (*http.Response, error) {
	held := false
	for {
		if err := l.wait(req.Context(), &held); err != nil {
			return nil, err
		}
		if resp, again, err := l.attempt(req, held); !again {
			return resp, err
		}
	}
}

// attempt sends a request once and reports its outcome; again says that
// the apiserver did not answer, and that the request is to wait for it.
func (l *link) attempt(req *http.Request, held bool) (resp *http.Response, again bool, err error) {
	f := feedOf(req.URL.Path)
	resp, err = l.send(req, f, req.URL.Query().Get("watch") == "true")
	if errors.Is(req.Context().Err(), context.Canceled) {
		// Stopped by us (a reload, the end): not the apiserver's doing.
		// A deadline that passed is: it did not answer.
		return resp, false, err
	}
	gone := unreachable(req, resp, err)
	if gone == nil {
		l.obs.answered(f, failure(req, resp, err))
		l.answeredAgain(f, held)
		return resp, false, err
	}
	l.obs.answered(f, gone)
	if resp != nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	if req.Context().Err() != nil {
		return nil, false, gone
	}
	l.down(gone)
	return nil, true, gone
}

// unreachable says why the apiserver could not answer a request, or nil
// when it did: refusals, resets, timeouts, and the 502, 503 and 504 of an
// apiserver that is starting or stopping or of a load balancer without one.
func unreachable(req *http.Request, resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	return nil
}

// failure is the error of an answered request, if it is one.
func failure(req *http.Request, resp *http.Response, err error) error {
	switch {
	case err != nil:
		return err
	// 410 Gone is the routine "resource version too old": the reflector
	// lists again, which is the apiserver working as it should.
	case resp.StatusCode >= 400 && resp.StatusCode != http.StatusGone:
		return fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	return nil
}

// send makes one attempt, tracked until its body is closed.
func (l *link) send(req *http.Request, f feed, watching bool) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	r := &request{feed: f, watch: watching, ctx: ctx, cancel: cancel}
	r.last.Store(l.clock.Now().UnixNano())
	l.mu.Lock()
	l.inflight[r] = struct{}{}
	l.mu.Unlock()
	resp, err := l.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		l.finish(r)
		if context.Cause(ctx) == errSilent {
			err = fmt.Errorf("%w for %s: %w", errSilent, l.t.silent, err)
		}
		cancel(nil)
		return nil, err
	}
	r.answered.Store(true)
	r.last.Store(l.clock.Now().UnixNano())
	resp.Body = &body{ReadCloser: resp.Body, l: l, r: r}
	return resp, nil
}

// finish stops tracking a request and keeps when it last heard.
func (l *link) finish(r *request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.inflight[r]; !ok {
		return
	}
	delete(l.inflight, r)
	if last := time.Unix(0, r.last.Load()); r.answered.Load() && last.After(l.heard[r.feed]) {
		l.heard[r.feed] = last
	}
}

// body tracks a response body: every byte is the apiserver heard from.
type body struct {
	io.ReadCloser
	l *link
	r *request
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.r.last.Store(b.l.clock.Now().UnixNano())
	}
	if err != nil {
		b.l.finish(b.r)
		if b.l.ended(b.r, err) && b.r.watch {
			// To the reflector, a watch the server closed: it watches
			// again at once from the resource version it has, where
			// an error would have it wait and list everything again.
			return n, io.EOF
		}
	}
	return n, err
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.l.finish(b.r)
	b.r.cancel(nil)
	return err
}

// ended says whether a body ended because the link abandoned it or its
// connection was found dead, and tells the watcher.
func (l *link) ended(r *request, err error) bool {
	switch {
	case context.Cause(r.ctx) == errSilent:
		l.obs.broke(r.feed, fmt.Errorf("%w for %s", errSilent, l.t.silent))
		return true
	case lostConnection(err):
		l.restarted(r, RestartConnectionLost, err)
		l.obs.broke(r.feed, err)
		return true
	}
	return false
}

// lostConnection says whether err is a connection's health check giving
// up on the apiserver: HTTP/2's ping, TCP keepalive or TCP_USER_TIMEOUT.
func lostConnection(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT) || strings.Contains(err.Error(), "http2: client connection lost")
}

// restarted counts and logs a request that is made again.
func (l *link) restarted(r *request, reason string, err error) {
	l.mu.Lock()
	l.restarts[reason]++
	l.mu.Unlock()
	kind := "list"
	if r.watch {
		kind = "watch"
	}
	l.log.Warn("watch restarted", "reason", reason, "request", kind, "resource", r.feed.resource, "namespace", r.feed.namespace, "err", err)
}

// abandonSilent cancels the requests that heard nothing for too long; a
// watch is then made again at once (body.Read), any other request is
// retried once the apiserver answers (RoundTrip).
func (l *link) abandonSilent() {
	now := l.clock.Now()
	var silent []*request
	l.mu.Lock()
	for r := range l.inflight {
		if now.Sub(time.Unix(0, r.last.Load())) >= l.t.silent && context.Cause(r.ctx) == nil {
			silent = append(silent, r)
		}
	}
	l.mu.Unlock()
	for _, r := range silent {
		r.cancel(errSilent)
		l.restarted(r, RestartSilent, fmt.Errorf("%w for %s", errSilent, l.t.silent))
	}
}

// lastHeard is the oldest of the feeds' last word from the apiserver; zero
// until every feed has heard once.
func (l *link) lastHeard(feeds []feed) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	latest := map[feed]time.Time{}
	for _, f := range feeds {
		latest[f] = l.heard[f]
	}
	for r := range l.inflight {
		if t := time.Unix(0, r.last.Load()); r.answered.Load() && t.After(latest[r.feed]) {
			latest[r.feed] = t
		}
	}
	var oldest time.Time
	for i, f := range feeds {
		if t := latest[f]; t.IsZero() {
			return time.Time{}
		} else if i == 0 || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest
}

// restartCounts copies the restarts by reason.
func (l *link) restartCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.restarts))
	for k, v := range l.restarts {
		out[k] = v
	}
	return out
}

// run checks the requests in flight and, while the apiserver does not
// answer, probes it, until ctx is done.
func (l *link) run(ctx context.Context) {
	tick := l.clock.NewTicker(l.t.tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
		l.abandonSilent()
		l.probeIfDown(ctx)
	}
}
