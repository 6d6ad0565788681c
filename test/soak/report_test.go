package soak

import (
	"image"
	"image/png"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReport writes the report of an invented soak; with SOAK_TEST_OUT set
// it stays there, to look at.
func TestReport(t *testing.T) {
	dir := os.Getenv("SOAK_TEST_OUT")
	if dir == "" {
		dir = t.TempDir()
	}
	began := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	r := &result{
		p: params{Duration: time.Hour, Services: 50, Empty: 5, Pods: 8, ChurnRate: 3, ProbeInterval: 100 * time.Millisecond,
			FollowEvery: 50 * time.Millisecond, FollowTimeout: 30 * time.Second, Grace: 10 * time.Second, RSSEvery: 5 * time.Second,
			Mode: "iptables", Routed: true, Seed: 7, Config: "mode = \"iptables\"\n"},
		began: began, churnFrom: 60, churnTo: 3660, version: "v0.0.0-test", warmUp: 20 * time.Second,
		probes: &tally{}, sent: 50000, ops: map[string]int{"replace an endpoint": 3000, "scale to zero": 1200},
	}
	r.rss = rssSeries(0)
	for i := range r.rss {
		r.rss[i].t += 60
	}
	for s := 0.0; s < 3660; s += 15 {
		r.heap = append(r.heap, point{s, 20 << 20})
		r.goroutines = append(r.goroutines, point{s, 80})
	}
	for s := 60.0; s < 3660; s += 1.0 / 3 {
		d := time.Duration(300+700*math.Mod(s*7.3, 1)) * time.Millisecond
		r.latencies = append(r.latencies, latency{at: s, kind: "replace an endpoint", service: "s01", d: d})
	}
	r.probes.add(probe{name: "soak/s01", proto: "tcp", from: "host", vip: netip.MustParseAddr("10.96.0.1"), start: began.Add(time.Minute)}, answered, began)
	r.end, _ = parseMetrics("kube_outpost_sync_proxy_rules_errors_total 0\nkube_outpost_sync_proxy_rules_duration_seconds_count 3600\nkube_outpost_sync_proxy_rules_duration_seconds_sum 36\n")
	r.programming = []bucket{{0, 0}, {0.25, 10}, {0.5, 100}, {1, 900}, {2, 1000}, {math.Inf(1), 1000}}
	r.rssV = judgeRSS(r.rss, r.churnFrom, r.churnTo)
	if fails := r.failures(); len(fails) != 0 {
		t.Errorf("failures of a good soak: %v", fails)
	}
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# kube-outpost soak: PASS", "![RSS over time](rss.png)", "![Change latency over time](latency.png)",
		"| replace an endpoint | 10800 |", "p99 1.90 s", "| mean sync duration | 10.0 ms |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	for _, name := range []string{"rss.png", "latency.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if img.Bounds() != image.Rect(0, 0, 960, 420) {
			t.Errorf("%s: %v", name, img.Bounds())
		}
	}

	// A failed soak says why, first.
	r.end[syncErrors] = map[string]float64{"": 2}
	r.probes.add(probe{name: "soak/s02", proto: "udp", from: "client", start: began.Add(2 * time.Minute)}, failedServed, began)
	r.unseen = []string{"1:00.0 soak/s02: scale to zero"}
	r.stopErr = os.ErrDeadlineExceeded
	fails := r.failures()
	if len(fails) != 4 {
		t.Errorf("failures: %q", fails)
	}
	if md := r.markdown(); !strings.HasPrefix(md, "# kube-outpost soak: FAIL") || !strings.Contains(md, "- **2 syncs failed") {
		t.Errorf("a failed soak's report:\n%s", md[:min(len(md), 600)])
	}
}
