package soak

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/test/plot"
)

// params are a soak's settings.
type params struct {
	Duration      time.Duration // of the churn
	Services      int
	Empty         int // of Services, deliberately without endpoints
	Pods          int
	ChurnRate     float64       // changes a second
	ProbeInterval time.Duration // between two round-robin probes
	FollowEvery   time.Duration // between two probes following a change
	FollowTimeout time.Duration // a change not seen by then is a failure
	Grace         time.Duration // a service changed longer ago than this must behave
	RSSEvery      time.Duration
	Mode          string
	Routed        bool // probes also from a routed client
	Seed          uint64
	Out           string
	Config        string // the daemon's configuration file, for the report
}

// latency is the time from the write of an EndpointSlice to the first probe
// that saw the change.
type latency struct {
	at      float64 // seconds since the soak began, of the write
	kind    string
	service string
	d       time.Duration
}

// result is everything a soak measured.
type result struct {
	p          params
	began      time.Time // t = 0 of every series: the daemon's start
	churnFrom  float64   // seconds since began
	churnTo    float64
	version    string
	rss        []point // bytes
	heap       []point // go_memstats_heap_inuse_bytes, bytes
	goroutines []point
	latencies  []latency
	unseen     []string // changes no probe saw within FollowTimeout
	probes     *tally
	sent       int // probes sent
	skipped    int // probes not sent: too many in flight
	ops        map[string]int
	opErrors   []string
	// The daemon's metrics at the end, and what its programming-latency
	// histogram observed during the churn.
	end         samples
	programming []bucket
	stopErr     error  // of stopping the daemon with SIGTERM
	diedDuring  string // how the daemon ended, when it did before the soak did
	rssV        rssVerdict
	warmUp      time.Duration
}

const (
	syncErrors      = "kube_outpost_sync_proxy_rules_errors_total"
	restoreFailures = "kube_outpost_sync_proxy_rules_restore_failures_total"
	repairs         = "kube_outpost_sync_proxy_rules_repairs_total"
	programming     = "kube_outpost_network_programming_duration_seconds"
	syncDuration    = "kube_outpost_sync_proxy_rules_duration_seconds"
)

// failures are the reasons the soak fails; none when it passes.
func (r *result) failures() []string {
	var out []string
	if n := r.probes.failed(); n > 0 {
		out = append(out, fmt.Sprintf("%d probes failed unexpectedly", n))
	}
	if n := r.end.value(syncErrors, ""); n > 0 {
		out = append(out, fmt.Sprintf("%v syncs failed (%s)", n, syncErrors))
	}
	if r.end == nil {
		out = append(out, "the daemon's metrics could not be read at the end")
	}
	if n := len(r.unseen); n > 0 {
		out = append(out, fmt.Sprintf("%d changes were never seen by a probe within %s", n, r.p.FollowTimeout))
	}
	if !r.rssV.OK {
		out = append(out, fmt.Sprintf("RSS grew by %.1f MiB over the second half of the churn (%.1f MiB/h), more than the %.1f MiB allowed",
			mib(r.rssV.Growth), mib(r.rssV.Slope), mib(r.rssV.Limit)))
	}
	if r.diedDuring != "" {
		out = append(out, "the daemon exited during the soak: "+r.diedDuring)
	} else if r.stopErr != nil {
		out = append(out, fmt.Sprintf("the daemon did not stop cleanly on SIGTERM: %v", r.stopErr))
	}
	if r.sent > 0 && r.skipped*10 > r.sent {
		out = append(out, fmt.Sprintf("the soak could not keep its probe rate: %d probes skipped (too many in flight), %d sent", r.skipped, r.sent))
	}
	return out
}

func mib(b float64) float64 { return b / (1 << 20) }

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// write puts the report, the plots and the raw series in dir.
func (r *result) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := plot.WritePNG(filepath.Join(dir, "rss.png"), r.rssChart().Draw(960, 420)); err != nil {
		return err
	}
	if err := plot.WritePNG(filepath.Join(dir, "latency.png"), r.latencyChart().Draw(960, 420)); err != nil {
		return err
	}
	var rss strings.Builder
	rss.WriteString("seconds,rss_bytes\n")
	for _, p := range r.rss {
		fmt.Fprintf(&rss, "%.1f,%.0f\n", p.t, p.v)
	}
	if err := os.WriteFile(filepath.Join(dir, "rss.csv"), []byte(rss.String()), 0o644); err != nil {
		return err
	}
	var lat strings.Builder
	lat.WriteString("seconds,kind,service,latency_ms\n")
	for _, l := range r.latencies {
		fmt.Fprintf(&lat, "%.1f,%s,%s,%.1f\n", l.at, l.kind, l.service, float64(l.d)/float64(time.Millisecond))
	}
	if err := os.WriteFile(filepath.Join(dir, "latency.csv"), []byte(lat.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.markdown()), 0o644)
}

func (r *result) rssChart() plot.Chart {
	toMiB := func(ps []point) []plot.Point {
		out := make([]plot.Point, len(ps))
		for i, p := range ps {
			out[i] = plot.Point{X: p.t / 60, Y: mib(p.v)}
		}
		return out
	}
	c := plot.Chart{
		Title:     "kube-outpost RSS (VmRSS) during the soak",
		XLabel:    "minutes since the daemon started",
		YLabel:    "MiB",
		YFromZero: true,
		Series: []plot.Series{
			{Name: "RSS", Color: plot.Blue, Points: toMiB(r.rss)},
			{Name: "Go heap in use", Color: plot.Orange, Points: toMiB(r.heap)},
		},
		Marks: []plot.Mark{{X: r.churnFrom / 60, Label: "churn"}, {X: r.rssV.From / 60, Label: "judged"}},
	}
	if r.rssV.Judged {
		a, b := fit(between(r.rss, r.rssV.From, r.rssV.To+1e-9))
		c.Series = append(c.Series, plot.Series{Name: "fit", Color: plot.Red, Points: []plot.Point{
			{X: r.rssV.From / 60, Y: mib(a + b*r.rssV.From)}, {X: r.rssV.To / 60, Y: mib(a + b*r.rssV.To)},
		}})
	}
	return c
}

func (r *result) latencyChart() plot.Chart {
	var dots []plot.Point
	for _, l := range r.latencies {
		dots = append(dots, plot.Point{X: l.at / 60, Y: float64(l.d) / float64(time.Millisecond)})
	}
	// The p99 of each window of about a thirtieth of the churn.
	win := math.Max(10, (r.churnTo-r.churnFrom)/30)
	var p99 []plot.Point
	for from := r.churnFrom; from < r.churnTo; from += win {
		var ds []time.Duration
		for _, l := range r.latencies {
			if l.at >= from && l.at < from+win {
				ds = append(ds, l.d)
			}
		}
		if len(ds) > 0 {
			p99 = append(p99, plot.Point{X: (from + win/2) / 60, Y: float64(percentile(ds, 99)) / float64(time.Millisecond)})
		}
	}
	return plot.Chart{
		Title:     "Change latency: EndpointSlice write to the first probe that sees the change",
		XLabel:    "minutes since the daemon started",
		YLabel:    "ms",
		YFromZero: true,
		Series: []plot.Series{
			{Name: "one change", Color: plot.Blue, Points: dots, Dots: true},
			{Name: fmt.Sprintf("p99 per %.0f s", win), Color: plot.Red, Points: p99},
		},
		Marks: []plot.Mark{{X: r.churnFrom / 60, Label: "churn"}},
	}
}

func (r *result) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	fails := r.failures()
	verdict := "PASS"
	if len(fails) > 0 {
		verdict = "FAIL"
	}
	w("# kube-outpost soak: %s\n\n", verdict)
	w("%s: %s of churn against kube-outpost %s in %s mode, in the lab (a real kube-apiserver and etcd, pods in network namespaces), "+
		"after a warm-up of %s. Made by `make soak` (test/soak).\n\n",
		r.began.UTC().Format("2006-01-02 15:04 UTC"), r.p.Duration, r.version, r.p.Mode, r.warmUp.Round(time.Second))
	for _, f := range fails {
		w("- **%s**\n", f)
	}
	if len(fails) > 0 {
		w("\n")
	}

	w("## Criteria\n\n| What | Must be | Measured | |\n|---|---|---|---|\n")
	ok := func(b bool) string {
		if b {
			return "ok"
		}
		return "**FAIL**"
	}
	nf := r.probes.failed()
	w("| Probes that failed unexpectedly | 0 | %d of %d | %s |\n", nf, r.sent, ok(nf == 0))
	se := r.end.value(syncErrors, "")
	w("| Failed syncs (`%s`) | 0 | %v | %s |\n", syncErrors, se, ok(se == 0 && r.end != nil))
	w("| Changes never seen by a probe within %s | 0 | %d of %d | %s |\n", r.p.FollowTimeout, len(r.unseen), len(r.latencies)+len(r.unseen), ok(len(r.unseen) == 0))
	if r.rssV.Judged {
		w("| RSS growth over the second half of the churn (least-squares line) | ≤ %.1f MiB | %+.2f MiB (%+.1f MiB/h) | %s |\n",
			mib(r.rssV.Limit), mib(r.rssV.Growth), mib(r.rssV.Slope), ok(r.rssV.OK))
	} else {
		w("| RSS growth over the second half of the churn | | not judged: %d samples, %d needed | |\n", r.rssV.Samples, rssMinSamples)
	}
	running := "ran throughout, stopped on SIGTERM"
	if r.diedDuring != "" {
		running = "exited during the soak: " + r.diedDuring
	} else if r.stopErr != nil {
		running = r.stopErr.Error()
	}
	w("| The daemon | runs throughout, stops cleanly | %s | %s |\n\n", running, ok(r.diedDuring == "" && r.stopErr == nil))
	w("The RSS criterion: the first half of the churn is warm-up (caches fill, the Go heap finds its size). "+
		"Over the second half, the least-squares line through the VmRSS samples may rise by at most %.0f %% of the "+
		"mean RSS of that half, and never less than %.0f MiB (what garbage collection alone moves RSS by). Over a "+
		"one-hour soak that is a slope of 10 %%/h: a leak of 2 KB per change at 3 changes a second (22 MB/h) fails.\n\n",
		rssTolerance*100, mib(rssFloor))

	w("## RSS\n\n![RSS over time](rss.png)\n\n")
	if len(r.rss) > 0 {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, p := range r.rss {
			lo, hi = math.Min(lo, p.v), math.Max(hi, p.v)
		}
		w("VmRSS of the daemon, sampled every %s: %d samples, from %.1f to %.1f MiB; %.1f MiB when the churn began, %.1f MiB at the end.",
			r.p.RSSEvery, len(r.rss), mib(lo), mib(hi), mib(valueAt(r.rss, r.churnFrom)), mib(r.rss[len(r.rss)-1].v))
		if r.rssV.Judged {
			w(" Over the judged half (from minute %.1f): mean %.1f MiB, first tenth %.1f MiB, last tenth %.1f MiB (%+.1f %%).",
				r.rssV.From/60, mib(r.rssV.Mean), mib(r.rssV.FirstMean), mib(r.rssV.LastMean), 100*(r.rssV.LastMean/r.rssV.FirstMean-1))
		}
		w("\n\n")
	}
	if len(r.goroutines) > 0 {
		w("Goroutines (`go_goroutines`): %.0f when the churn began, %.0f at the end, at most %.0f.\n\n",
			valueAt(r.goroutines, r.churnFrom), r.goroutines[len(r.goroutines)-1].v, maxOf(r.goroutines))
	}

	w("## Change latency\n\n![Change latency over time](latency.png)\n\n")
	w("Measured by the soak: from the start of the EndpointSlice write to the end of the first probe that sees the change "+
		"(an answer from the endpoint added, a refusal once the last one is gone, an answer at a new ClusterIP), "+
		"one TCP probe from the host every %s after the write, so figures are upper bounds by up to that much. "+
		"A following probe gives up after 250 ms (and is not judged then): the first SYN to a new ClusterIP not yet "+
		"programmed leaves for the router, which has no route for it, and would otherwise wait out a lost ICMP unreachable.\n\n", r.p.FollowEvery)
	w("| Change | Count | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
	kinds := map[string][]time.Duration{}
	var all []time.Duration
	for _, l := range r.latencies {
		kinds[l.kind] = append(kinds[l.kind], l.d)
		all = append(all, l.d)
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	row := func(name string, ds []time.Duration) {
		w("| %s | %d | %s | %s | %s | %s |\n", name, len(ds), ms(percentile(ds, 50)), ms(percentile(ds, 90)), ms(percentile(ds, 99)), ms(percentile(ds, 100)))
	}
	for _, k := range names {
		row(k, kinds[k])
	}
	row("**all**", all)
	w("\n")
	if n := r.programming; len(n) > 0 && n[len(n)-1].count > 0 {
		w("The daemon's own `%s` (from the slice's `endpoints.kubernetes.io/last-change-trigger-time`, which the soak sets, "+
			"to the end of the sync), over the churn: %.0f observations, p50 %.2f s, p99 %.2f s (interpolated within "+
			"kube-proxy's buckets: 0.25 s, 0.5 s, then whole seconds).\n\n",
			programming, n[len(n)-1].count, histogramQuantile(0.5, n), histogramQuantile(0.99, n))
	}
	for _, u := range r.unseen {
		w("- never seen: %s\n", u)
	}
	if len(r.unseen) > 0 {
		w("\n")
	}

	w("## Probes\n\n")
	w("Round-robin over the services every %s, TCP (HTTP on a new connection) and UDP in turn", r.p.ProbeInterval)
	if r.p.Routed {
		w(", from the host and from a routed client (a machine routed through the host, `routed_clients`) in turn")
	}
	w("; and the probes following each change. A probe is judged against what the service was within %s (the grace "+
		"the daemon has to program a change) before it began until it ended: an answer must come from an endpoint of "+
		"that time; a service with endpoints throughout must answer; one without endpoints throughout (%d deliberately, "+
		"others scaled to zero) must refuse at once (reset, ICMP unreachable), not time out. %d probes sent, %d skipped "+
		"(too many in flight).\n\n", r.p.Grace, r.p.Empty, r.sent, r.skipped)
	w("| Probes | ")
	for o := outcome(0); o < nOutcomes; o++ {
		w("%s | ", o)
	}
	w("\n|---|")
	for o := outcome(0); o < nOutcomes; o++ {
		w("---|")
	}
	w("\n")
	for _, k := range r.probes.keys() {
		c := r.probes.row(k)
		w("| %s | ", k)
		for o := outcome(0); o < nOutcomes; o++ {
			w("%d | ", c[o])
		}
		w("\n")
	}
	w("\n")
	if len(r.probes.failures) > 0 {
		w("Failed probes (time since the daemon started, service, protocol, origin, ClusterIP):\n\n```\n%s\n```\n", strings.Join(r.probes.failures, "\n"))
		if r.probes.dropped > 0 {
			w("and %d more.\n", r.probes.dropped)
		}
		w("\n")
	}

	w("## Churn\n\n")
	w("%d services in one cluster (%d without endpoints throughout), each with TCP port 80 and UDP port 53 and 2 or 3 endpoints among %d pods; "+
		"%.1f changes a second at random moments, to services picked at random, never to one whose last change is still being followed:\n\n",
		r.p.Services, r.p.Empty, r.p.Pods, r.p.ChurnRate)
	w("| Change | Count |\n|---|---|\n")
	var opNames []string
	for k := range r.ops {
		opNames = append(opNames, k)
	}
	sort.Strings(opNames)
	total := 0
	for _, k := range opNames {
		w("| %s | %d |\n", k, r.ops[k])
		total += r.ops[k]
	}
	w("| **all** | %d |\n\n", total)
	if len(r.opErrors) > 0 {
		w("%d writes to the apiserver failed (nothing is judged against such a service until its next write):\n\n```\n%s\n```\n\n",
			len(r.opErrors), strings.Join(r.opErrors[:min(len(r.opErrors), 20)], "\n"))
	}

	w("## The daemon's metrics at the end\n\n")
	if r.end == nil {
		w("Not read.\n\n")
	} else {
		w("| Metric | Value |\n|---|---|\n")
		for _, m := range []string{syncErrors, restoreFailures, repairs, syncDuration + "_count", "kube_outpost_sync_full_proxy_rules_duration_seconds_count",
			"kube_outpost_sync_partial_proxy_rules_duration_seconds_count", programming + "_count", "kube_outpost_service_ports_programmed"} {
			w("| `%s` | %v |\n", m, r.end.value(m, ""))
		}
		if n := r.end.value(syncDuration+"_count", ""); n > 0 {
			w("| mean sync duration | %.1f ms |\n", 1000*r.end.value(syncDuration+"_sum", "")/n)
		}
		w("\n`%s` counts full syncs run because rules of ours were found removed; nothing removes them in the soak, so it should be 0.\n\n", repairs)
	}

	w("## Setup\n\n")
	if r.p.Routed {
		w("The host namespace's `net.ipv4.icmp_ratelimit` is 0: the routed client's UDP to a service without endpoints " +
			"is refused by an ICMP port unreachable, which the kernel would otherwise send at most once a second after " +
			"a burst of 6, far less often than the soak is refused.\n\n")
	}
	w("Seed %d (SOAK_SEED reproduces the churn's choices). Probes time out after 2 s, those following a change after 250 ms. "+
		"Files here: `rss.csv`, `latency.csv` (the series plotted), `daemon.log`.\n\nThe daemon's configuration:\n\n```toml\n%s```\n",
		r.p.Seed, r.p.Config)
	return b.String()
}

// valueAt is the value of the last sample at or before t (the first one if
// none is).
func valueAt(ps []point, t float64) float64 {
	if len(ps) == 0 {
		return math.NaN()
	}
	v := ps[0].v
	for _, p := range ps {
		if p.t > t {
			break
		}
		v = p.v
	}
	return v
}

func maxOf(ps []point) float64 {
	m := math.Inf(-1)
	for _, p := range ps {
		m = math.Max(m, p.v)
	}
	return m
}
