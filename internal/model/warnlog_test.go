package model

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineLog records every Warn line: its message and attributes.
type lineLog struct {
	mu    sync.Mutex
	lines []map[string]string // "msg" and each attribute
}

func (h *lineLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lineLog) WithGroup(string) slog.Handler            { return h }
func (h *lineLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level != slog.LevelWarn {
		return nil
	}
	l := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		l[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, l)
	h.mu.Unlock()
	return nil
}

// take returns the lines since the last call, and forgets them.
func (h *lineLog) take() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.lines
	h.lines = nil
	return out
}

// byCluster counts lines per cluster attribute, summaries apart.
func byCluster(lines []map[string]string) (warnings, summaries map[string]int) {
	warnings, summaries = map[string]int{}, map[string]int{}
	for _, l := range lines {
		if _, ok := l["suppressed"]; ok {
			summaries[l["cluster"]]++
		} else {
			warnings[l["cluster"]]++
		}
	}
	return warnings, summaries
}

// fakeTimers are warnLog.after for tests: they fire when the test says.
type fakeTimers struct{ due []func() }

func (f *fakeTimers) after(_ time.Duration, fn func()) { f.due = append(f.due, fn) }

func (f *fakeTimers) fire() {
	due := f.due
	f.due = nil
	for _, fn := range due {
		fn()
	}
}

func TestWarnLogRateLimitPerCluster(t *testing.T) {
	h := &lineLog{}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	timers := &fakeTimers{}
	w := newWarnLog(slog.New(h), func() time.Time { return now })
	w.after = timers.after

	// A burst of 200 object changes at one instant: the burst is written,
	// the rest counted.
	for i := range 200 {
		w.object("rogue", fmt.Sprintf("ns/svc-%d", i), []string{"spec.clusterIPs 1.2.3.4 is outside the cluster's service_cidrs"})
	}
	// The honest cluster is not starved by the rogue one.
	w.object("honest", "ns/web", []string{"EndpointSlice web-1: endpoint 127.0.0.1 is a loopback address: dropped"})
	warnings, summaries := byCluster(h.take())
	if warnings["rogue"] != warnBurst || warnings["honest"] != 1 || len(summaries) != 0 {
		t.Fatalf("lines by cluster %v, summaries %v; want %d of rogue, 1 of honest, no summary yet", warnings, summaries, warnBurst)
	}
	if len(timers.due) != 1 {
		t.Fatalf("%d summaries scheduled, want 1", len(timers.due))
	}

	// One second later, warnRate more lines are allowed.
	now = now.Add(time.Second)
	for i := range 100 {
		w.object("rogue", fmt.Sprintf("ns/late-%d", i), []string{"x"})
	}
	if warnings, _ := byCluster(h.take()); warnings["rogue"] != warnRate {
		t.Fatalf("after 1 s: %d lines, want %d", warnings["rogue"], warnRate)
	}
	if len(timers.due) != 1 {
		t.Fatalf("%d summaries scheduled during one window, want 1", len(timers.due))
	}

	// The summary: every suppressed line counted, over the window.
	now = now.Add(warnSummaryEvery - time.Second)
	timers.fire()
	lines := h.take()
	if len(lines) != 1 {
		t.Fatalf("summary lines %v, want 1", lines)
	}
	want := fmt.Sprintf(`cluster "rogue": %d warnings suppressed in the last 10s`, 200-warnBurst+100-warnRate)
	if l := lines[0]; !strings.HasPrefix(l["msg"], want) || l["cluster"] != "rogue" || l["suppressed"] != fmt.Sprint(200-warnBurst+100-warnRate) {
		t.Errorf("summary %v, want %q...", l, want)
	}
	// Nothing left: a second firing says nothing, and calm lines pass.
	timers.fire()
	w.object("rogue", "ns/calm", []string{"x"})
	if lines := h.take(); len(lines) != 1 || lines[0]["service"] != "ns/calm" {
		t.Errorf("after the summary: %v, want the one calm line", lines)
	}
}

func TestWarnLogOneBoundedLinePerChange(t *testing.T) {
	h := &lineLog{}
	w := newWarnLog(slog.New(h), time.Now)
	var problems []string
	for i := range 500 {
		problems = append(problems, fmt.Sprintf("EndpointSlice s: endpoint 127.0.%d.%d is a loopback address: dropped", i/256, i%256))
	}
	w.object("c1", "ns/"+strings.Repeat("n", 10000), problems)
	lines := h.take()
	if len(lines) != 1 {
		t.Fatalf("%d lines for one change, want 1", len(lines))
	}
	l := lines[0]
	if l["problems"] != "500" || len(l["reason"]) > maxWarnText+40 || len(l["service"]) > maxWarnName+40 || !strings.Contains(l["reason"], "more bytes)") ||
		!strings.HasPrefix(l["reason"], problems[0]+"; "+problems[1]) {
		t.Errorf("line %v (reason %d bytes)", l, len(l["reason"]))
	}
}

// TestStoreWarningsLimitedCountersNot floods the store with refused
// services of one cluster: the log gets a bounded number of lines, the
// other cluster's warning gets through, and the refusal counters and
// Refusals still hold every one.
func TestStoreWarningsLimitedCountersNot(t *testing.T) {
	h := &lineLog{}
	s := NewStore(slog.New(h), nil)
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return start }
	timers := &fakeTimers{}
	s.warns.after = timers.after
	honest := testCfg
	honest.Name = "honest"
	rogue := testCfg
	rogue.Name = "rogue"
	s.SetClusters([]ClusterConfig{rogue, honest})

	const flood = 1000
	for i := range flood {
		svc := newSvc(fmt.Sprintf("bad-%d", i), []string{"192.168.0.1"}, webPorts)
		s.UpsertService("rogue", svc)
	}
	// Several problems of one change: one line.
	s.UpsertSlice("honest", webSlice("web-1", readyEP("127.0.0.1"), readyEP("169.254.169.254"), readyEP("224.1.1.1")))
	s.UpsertService("honest", webSvc())

	warnings, _ := byCluster(h.take())
	if warnings["rogue"] != warnBurst || warnings["honest"] != 1 {
		t.Errorf("lines by cluster %v, want %d of rogue, 1 of honest", warnings, warnBurst)
	}
	timers.fire()
	if _, summaries := byCluster(h.take()); summaries["rogue"] != 1 {
		t.Errorf("summaries %v, want one of rogue", summaries)
	}
	var counted uint64
	for _, c := range s.RefusalCounts() {
		if c.Cluster == "rogue" {
			counted += c.Count
		}
	}
	if counted != flood {
		t.Errorf("refusals of rogue counted %d, want %d", counted, flood)
	}
	if n := len(s.Refusals()); n != flood+1 {
		t.Errorf("%d refusals in status, want %d", n, flood+1)
	}
}

// TestWarnLogHostileText: slog's handlers quote what a cluster wrote, so a
// name cannot start a line of its own in the journal.
func TestWarnLogHostileText(t *testing.T) {
	var b bytes.Buffer
	w := newWarnLog(slog.New(slog.NewTextHandler(&b, nil)), time.Now)
	w.object("c1", "ns/x\nlevel=ERROR msg=\"forged\"\x1b[2J\u202e", []string{"endpoint \"1.2.3.4\r\nforged\" is not an IP address"})
	out := b.String()
	if strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "\r\x1b\u202e") {
		t.Errorf("log line not quoted: %q", out)
	}
}

func TestBoundText(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefghij… (1 more bytes)"},
		// Never inside a rune: é is two bytes.
		{"abcdefghié", 10, "abcdefghi… (2 more bytes)"},
		{"ééééé", 3, "é… (8 more bytes)"},
	} {
		if got := BoundText(tt.in, tt.n); got != tt.want {
			t.Errorf("BoundText(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
