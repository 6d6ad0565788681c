package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// While an apiserver does not answer, its watcher's requests wait here
// instead of failing back to client-go's reflector, whose backoff would
// grow to between 30 and 60 s: a change made when the apiserver returns
// would be followed up to a minute late, however short the outage. The
// link probes the apiserver instead, with the watcher's own credentials,
// and lets the requests go as soon as it answers.
//
// The cost of the probe is bounded: one GET /readyz per probeEvery (2 s)
// per link while its apiserver does not answer, each given probeTimeout
// (2 s), and none while it answers. A cluster has one link, two with a
// node watcher. Held requests are let through without
// the probe every retryEvery (30 s) too, for an apiserver whose /readyz
// fails but whose API serves.

// wait holds a request while the apiserver does not answer; held says
// whether it had to.
func (l *link) wait(ctx context.Context, held *bool) error {
	l.mu.Lock()
	ready := l.ready
	l.mu.Unlock()
	select {
	case <-ready:
		return nil
	default:
	}
	*held = true
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// down holds the requests that follow, until the probe or retryEvery lets
// them go.
func (l *link) down(err error) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isReady() {
		l.ready = make(chan struct{})
		l.lastProbe, l.lastTry = now, now
	}
	if l.outage.IsZero() {
		l.outage = now
		l.log.Warn("apiserver does not answer; its requests wait for it, and it is probed", "every", l.t.probeEvery, "err", err)
	}
}

func (l *link) isReady() bool {
	select {
	case <-l.ready:
		return true
	default:
		return false
	}
}

// open lets the held requests go; the caller holds l.mu.
func (l *link) open() {
	if !l.isReady() {
		close(l.ready)
	}
}

// answeredAgain ends an outage on a request the apiserver answered, and
// counts a held one as a watch that resumes.
func (l *link) answeredAgain(f feed, held bool) {
	l.mu.Lock()
	since := l.outage
	l.outage = time.Time{}
	if held {
		l.restarts[RestartAPIServerBack]++
	}
	l.mu.Unlock()
	if !since.IsZero() {
		l.log.Info("apiserver answers again", "after", l.clock.Since(since).Round(time.Second), "resource", f.resource, "namespace", f.namespace)
	}
}

// probeIfDown probes an apiserver that does not answer, at most every
// probeEvery, and lets the held requests go when it answers, or when they
// have waited retryEvery.
func (l *link) probeIfDown(ctx context.Context) {
	now := l.clock.Now()
	l.mu.Lock()
	// Half a tick early is on time: ticks that come a hair early would
	// otherwise stretch the period by a whole tick.
	if l.isReady() || now.Add(l.t.tick/2).Sub(l.lastProbe) < l.t.probeEvery {
		l.mu.Unlock()
		return
	}
	l.lastProbe = now
	l.mu.Unlock()
	err := l.probe(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.log.Debug("apiserver probe answered; letting its requests go", "down", l.clock.Since(l.outage).Round(time.Second))
		l.open()
	case l.clock.Since(l.lastTry) >= l.t.retryEvery:
		l.log.Debug("apiserver probe fails; letting its requests try anyway", "err", err)
		l.lastTry = l.clock.Now()
		l.open()
	}
}

// probe asks /readyz past the gate. Any answer but a 5xx or 429 counts:
// with a 401 or 403 the apiserver is there, and the real request tells
// the watcher what is wrong with the credentials.
func (l *link) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.t.probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.probeURL, nil)
	if err != nil {
		return err
	}
	resp, err := l.next.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return fmt.Errorf("GET /readyz: %s", resp.Status)
	}
	return nil
}

// downSince is when the current outage began; zero while the apiserver
// answers.
func (l *link) downSince() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outage
}
