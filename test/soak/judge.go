package soak

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"syscall"
	"time"
)

// state is what the churn made of one service, from a moment on.
type state struct {
	// at is when the write that made it began: the daemon may act on it
	// from then on, before the write returns.
	at      time.Time
	present bool       // the Service exists
	vip     netip.Addr // its ClusterIP, when present
	pods    []string   // its ready endpoints, by pod name
	// unknown: a write failed, so the apiserver may or may not have
	// applied it. Nothing is judged against it.
	unknown bool
}

// history is one service's states in the order written; a service's
// writes are never concurrent.
type history struct {
	states []state
}

// add appends s, which must not be older than the last state.
func (h *history) add(s state) {
	if n := len(h.states); n > 0 && s.at.Before(h.states[n-1].at) {
		s.at = h.states[n-1].at
	}
	h.states = append(h.states, s)
}

// current is the last state; the zero state before the first.
func (h *history) current() state {
	if len(h.states) == 0 {
		return state{}
	}
	return h.states[len(h.states)-1]
}

// window returns the states in force at some time in [from, to]: the last
// one written at or before from, and every one written after it up to to.
func (h *history) window(from, to time.Time) []state {
	i := sort.Search(len(h.states), func(i int) bool { return h.states[i].at.After(from) })
	if i > 0 {
		i--
	}
	var out []state
	for ; i < len(h.states) && !h.states[i].at.After(to); i++ {
		out = append(out, h.states[i])
	}
	return out
}

// probe is one request to a ClusterIP and what came of it.
type probe struct {
	svc        int
	name       string // namespace/name, for the report
	proto      string // "tcp" or "udp"
	from       string // "host" or "client"
	vip        netip.Addr
	start, end time.Time
	answer     string // the answering pod's name, when err is nil
	err        error
	timedOut   bool   // err is the probe's own timeout
	diag       string // what the host held just after, for a probe worth diagnosing
}

// outcome is the judgement of a probe.
type outcome int

const (
	// answered by an endpoint the service had within the grace period
	answered outcome = iota
	// refused, the service without endpoints throughout the grace period
	// (deliberately, or scaled to zero): what must happen
	refusedAsExpected
	// not answered while the service changed within the grace period:
	// the daemon may not have programmed the change yet
	duringChange
	// not answered although the service had endpoints throughout the
	// grace period
	failedServed
	// answered by a pod that was no endpoint of the service within the
	// grace period
	failedWrongPod
	// without endpoints throughout the grace period and answered, or not
	// refused at once (a timeout: packets dropped rather than rejected)
	failedNotRefused
	nOutcomes
)

func (o outcome) String() string {
	return [...]string{"answered", "refused as expected", "during a change", "FAILED: no answer from a served service",
		"FAILED: answer from a pod that is no endpoint", "FAILED: not refused without endpoints"}[o]
}

func (o outcome) failed() bool { return o >= failedServed }

// refusal reports whether err is an active refusal: a TCP reset or ICMP
// port unreachable (ECONNREFUSED), or REJECT in OUTPUT failing a local
// sender's UDP send (EPERM).
func refusal(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPERM)
}

// judge decides what p's result means, given the service's history and the
// grace period the daemon has to program a change.
func judge(h *history, p probe, grace time.Duration) outcome {
	from := p.start.Add(-grace)
	w := h.window(from, p.end)
	allowed := map[string]bool{}
	// A service first written within the window did not exist before.
	existed := len(w) > 0 && !w[0].at.After(from)
	served, empty, unknown := existed, existed, false
	for _, s := range w {
		unknown = unknown || s.unknown
		here := s.present && s.vip == p.vip
		if here {
			for _, pod := range s.pods {
				allowed[pod] = true
			}
		}
		served = served && here && len(s.pods) > 0
		empty = empty && here && len(s.pods) == 0
	}
	if len(w) == 0 || unknown {
		return duringChange
	}
	switch {
	case p.err == nil && allowed[p.answer]:
		return answered
	case p.err == nil:
		return failedWrongPod
	case served:
		return failedServed
	case empty && refusal(p.err):
		return refusedAsExpected
	case empty:
		return failedNotRefused
	default:
		return duringChange
	}
}

// tally counts the outcomes of the probes judged, by protocol and origin,
// and keeps the first failures in detail.
type tally struct {
	mu       sync.Mutex
	counts   map[string]*[nOutcomes]int // by "tcp from host" etc.
	failures []string
	dropped  int // failures beyond those kept in detail
}

const keptFailures = 100

// add counts p's outcome o; for a failure it returns the line that
// describes it.
func (t *tally) add(p probe, o outcome, began time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[string]*[nOutcomes]int{}
	}
	key := p.proto + " from " + p.from
	if t.counts[key] == nil {
		t.counts[key] = new([nOutcomes]int)
	}
	t.counts[key][o]++
	if !o.failed() {
		return ""
	}
	res := fmt.Sprintf("answer %q", p.answer)
	if p.err != nil {
		res = p.err.Error()
	}
	line := fmt.Sprintf("%s %s %s from %s to %s: %s: %s",
		fmtOffset(p.start.Sub(began)), p.name, p.proto, p.from, p.vip, o, res)
	if len(t.failures) >= keptFailures {
		t.dropped++
	} else {
		t.failures = append(t.failures, line)
	}
	return line
}

// total returns the count of outcome o over every protocol and origin.
func (t *tally) total(o outcome) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.counts {
		n += c[o]
	}
	return n
}

// failed is the number of failed probes.
func (t *tally) failed() int {
	n := 0
	for o := failedServed; o < nOutcomes; o++ {
		n += t.total(o)
	}
	return n
}

// keys are the protocol-and-origin rows, sorted.
func (t *tally) keys() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ks []string
	for k := range t.counts {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (t *tally) row(key string) [nOutcomes]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.counts[key]; c != nil {
		return *c
	}
	return [nOutcomes]int{}
}

// fmtOffset writes a time since the soak began as m:ss.s.
func fmtOffset(d time.Duration) string {
	s := d.Seconds()
	m := int(s / 60)
	return fmt.Sprintf("%d:%04.1f", m, s-float64(m*60))
}
