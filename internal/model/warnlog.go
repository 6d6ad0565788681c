package model

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// The model's warnings about a cluster's objects are the one log output a
// cluster controls: a hostile or broken one could make thousands a second
// and bury the other clusters' lines, and the host's, in the journal. So
// each object change makes one line, whatever the number of its problems,
// and each cluster has its own token bucket of lines: past it, its lines
// are counted instead of written, and a summary says how many every
// warnSummaryEvery. Only lines are limited; the refusal counters (metrics)
// and status see every refusal.
const (
	// warnRate and warnBurst are the lines per second a cluster may make,
	// and how many it may make at once: enough for an honest cluster's
	// rollout, small enough that journald's own rate limit (by default
	// 10,000 lines per 30 s for the whole unit) is never reached by one.
	warnRate  = 5
	warnBurst = 50
	// warnSummaryEvery is how long after its first suppressed line a
	// cluster's summary comes: at most one summary per cluster in that time.
	warnSummaryEvery = 10 * time.Second
	// maxWarnText bounds the problems of one line; `kube-outpost status`
	// shows them too. maxWarnName bounds the object's name, which only a
	// hostile apiserver makes longer than namespace/name, 127 bytes.
	maxWarnText = 1024
	maxWarnName = 256
)

// warnLog writes the model's warnings, at most warnRate lines a second per
// cluster. It has its own lock: its summaries come from timers.
type warnLog struct {
	log *slog.Logger
	now func() time.Time
	// after is time.AfterFunc; tests fire the summaries themselves.
	after func(time.Duration, func())

	mu       sync.Mutex
	clusters map[string]*warnBucket
}

// warnBucket is one cluster's token bucket, and its lines not written.
type warnBucket struct {
	tokens float64
	at     time.Time // when tokens was last refilled
	// suppressed lines since since; a summary is scheduled while any are.
	suppressed int
	since      time.Time
}

func newWarnLog(log *slog.Logger, now func() time.Time) *warnLog {
	return &warnLog{log: log, now: now, clusters: map[string]*warnBucket{},
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
}

// object logs the problems one change of object (a service) of cluster
// left, in one line.
func (w *warnLog) object(cluster, object string, problems []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	b := w.clusters[cluster]
	if b == nil {
		b = &warnBucket{tokens: warnBurst, at: now}
		w.clusters[cluster] = b
	}
	if !b.take(now) {
		if b.suppressed == 0 {
			b.since = now
			w.after(warnSummaryEvery, func() { w.summary(cluster) })
		}
		b.suppressed++
		return
	}
	w.log.Warn("service not fully programmed", "cluster", cluster, "service", BoundText(object, maxWarnName),
		"problems", len(problems), "reason", BoundText(joinMessages(problems), maxWarnText))
}

// take refills the bucket for the time since its last refill and takes a
// token, if there is one.
func (b *warnBucket) take(now time.Time) bool {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(warnBurst, b.tokens+d.Seconds()*warnRate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// summary logs how many of cluster's lines were suppressed since its first
// suppressed one.
func (w *warnLog) summary(cluster string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.clusters[cluster]
	if b == nil || b.suppressed == 0 {
		return
	}
	period := w.now().Sub(b.since).Round(time.Second)
	w.log.Warn(fmt.Sprintf("cluster %q: %d warnings suppressed in the last %s (at most %d lines a second per cluster; status and metrics count every refusal)",
		cluster, b.suppressed, period, warnRate), "cluster", cluster, "suppressed", b.suppressed, "period", period)
	b.suppressed = 0
}

// BoundText cuts s to at most n bytes, on a UTF-8 boundary, and says how
// much was cut: for text a cluster makes as long as it likes (problems of
// many endpoints, an apiserver's error), which log lines and status carry.
func BoundText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d more bytes)", s[:cut], len(s)-cut)
}
