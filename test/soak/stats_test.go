package soak

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestParseMetricsAndHistogram(t *testing.T) {
	text := `# HELP kube_outpost_network_programming_duration_seconds x
# TYPE kube_outpost_network_programming_duration_seconds histogram
kube_outpost_network_programming_duration_seconds_bucket{le="0"} 0
kube_outpost_network_programming_duration_seconds_bucket{le="0.25"} 10
kube_outpost_network_programming_duration_seconds_bucket{le="0.5"} 50
kube_outpost_network_programming_duration_seconds_bucket{le="1"} 90
kube_outpost_network_programming_duration_seconds_bucket{le="2"} 100
kube_outpost_network_programming_duration_seconds_bucket{le="+Inf"} 100
kube_outpost_network_programming_duration_seconds_sum 55
kube_outpost_network_programming_duration_seconds_count 100
kube_outpost_sync_proxy_rules_errors_total 0
kube_outpost_build_info{mode="iptables",version="v1.2.3"} 1
go_goroutines 42
`
	m, err := parseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if v := m.value("go_goroutines", ""); v != 42 {
		t.Errorf("go_goroutines = %v", v)
	}
	if v := m.value(syncErrors, ""); v != 0 {
		t.Errorf("%s = %v", syncErrors, v)
	}
	if v := m.value("absent", ""); v != 0 {
		t.Errorf("an absent series = %v, want 0", v)
	}
	h := m.histogram(programming)
	if len(h) != 6 || !math.IsInf(h[5].le, 1) || h[1].le != 0.25 {
		t.Fatalf("buckets %v", h)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.5, 0.5},    // the 50th observation is the last of the 0.5 bucket
		{0.7, 0.75},   // half-way through the (0.5, 1] bucket
		{0.99, 1.9},   // 9 of 10 through (1, 2]
		{0.05, 0.125}, // half-way through (0, 0.25]
	} {
		if got := histogramQuantile(c.q, h); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("histogramQuantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// What was observed after a base: only the new observations count.
	base := []bucket{{0, 0}, {0.25, 10}, {0.5, 50}, {1, 50}, {2, 50}, {math.Inf(1), 50}}
	d := minus(h, base)
	if d[5].count != 50 || d[1].count != 0 {
		t.Fatalf("minus: %v", d)
	}
	if got := histogramQuantile(0.5, d); math.Abs(got-0.8125) > 1e-9 { // the 25th of the 40 in (0.5, 1]
		t.Errorf("quantile of the difference = %v", got)
	}
	if got := histogramQuantile(0.5, minus(h, h)); !math.IsNaN(got) {
		t.Errorf("quantile without observations = %v, want NaN", got)
	}
	if v := buildVersion(m); v != "v1.2.3" {
		t.Errorf("version %q", v)
	}
	if _, err := parseMetrics("what is this\n"); err == nil {
		t.Error("a line that is no sample parsed")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := percentile(ds, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 99) != 0 {
		t.Error("p99 of nothing")
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("percentile sorted its argument")
	}
}

func TestFit(t *testing.T) {
	var ps []point
	for i := 0; i < 10; i++ {
		ps = append(ps, point{float64(i), 3 + 2*float64(i)})
	}
	if a, b := fit(ps); math.Abs(a-3) > 1e-9 || math.Abs(b-2) > 1e-9 {
		t.Errorf("fit = %v + %v t, want 3 + 2 t", a, b)
	}
	if a, b := fit([]point{{1, 5}, {1, 7}}); a != 6 || b != 0 {
		t.Errorf("fit of one instant = %v + %v t", a, b)
	}
}

// rssSeries is an hour of RSS sampled every 5 s: a level of 50 MiB, a
// warm-up that rises 10 MiB over the first 10 minutes, a GC sawtooth of
// 3 MiB and noise, and a leak of leak bytes an hour.
func rssSeries(leak float64) []point {
	r := rand.New(rand.NewPCG(1, 2))
	var ps []point
	for s := 0.0; s <= 3600; s += 5 {
		v := 50.0 * (1 << 20)
		v += 10 * (1 << 20) * math.Min(1, s/600)
		v += 3 * (1 << 20) * math.Mod(s, 90) / 90
		v += (r.Float64() - 0.5) * (1 << 20)
		v += leak * s / 3600
		ps = append(ps, point{s, v})
	}
	return ps
}

func TestJudgeRSS(t *testing.T) {
	flat := judgeRSS(rssSeries(0), 60, 3600)
	if !flat.Judged || !flat.OK {
		t.Fatalf("a flat RSS with warm-up and a GC sawtooth failed: %+v", flat)
	}
	if math.Abs(mib(flat.Slope)) > 1 {
		t.Errorf("slope of a flat RSS: %.2f MiB/h", mib(flat.Slope))
	}
	if want := rssTolerance * flat.Mean; flat.Limit != want {
		t.Errorf("limit %v, want %v", flat.Limit, want)
	}
	// 22 MB/h: 2 KB per change at 3 changes a second.
	leak := judgeRSS(rssSeries(22e6), 60, 3600)
	if !leak.Judged || leak.OK {
		t.Fatalf("a leak of 22 MB/h passed: %+v", leak)
	}
	if math.Abs(leak.Slope-22e6) > 2e6 {
		t.Errorf("slope %.1f MB/h, want about 22", leak.Slope/1e6)
	}
	// 4 MB/h is within 10 %/h of about 62 MiB: passes, as documented.
	if v := judgeRSS(rssSeries(4e6), 60, 3600); !v.OK {
		t.Errorf("4 MB/h failed: %+v", v)
	}
	// Too few samples: not judged, and not failed.
	short := judgeRSS(rssSeries(0)[:12], 0, 55)
	if short.Judged || !short.OK {
		t.Errorf("a 1-minute series was judged: %+v", short)
	}
}
