// Package bench is `make bench-compare`: kube-proxy and kube-outpost side
// by side against the same lab apiserver and the same objects, each proxy
// in a network namespace of its own (compare_test.go, build tag bench), and
// the report it writes: one Markdown table with the ratios ours / kube-proxy,
// the machine it ran on, and PNG plots (this file).
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/test/plot"
)

// The proxies of a row.
const (
	kubeProxy         = "kube-proxy"
	kubeProxyMinSync0 = "kube-proxy, min-sync 0"
	kubeOutpost       = "kube-outpost"
)

// Row is one proxy in one mode: what it measured. A zero duration or size
// is "not measured" (the row stopped early: Err says why).
type Row struct {
	Mode  string // "iptables (nf_tables)", "iptables (legacy)", "nftables"
	Proxy string // kubeProxy, kubeProxyMinSync0 or kubeOutpost

	// Cold sync: process start to every ClusterIP in the kernel's rules
	// and a sample service answering.
	Cold         time.Duration
	ColdTimedOut bool
	// Change latency: an EndpointSlice write to the first connection that
	// reached the new endpoints, under the background churn.
	Latencies     []time.Duration
	ChangesFailed int // no connection reached the new endpoints in time
	ChurnChanges  int // background changes during the measured ones
	// Lone changes, the same without churn, each after the proxy had
	// nothing to do for a while (loneGap).
	Lone       []time.Duration
	LoneFailed int
	// ProgrammedLone and ProgrammedChurn are kube-outpost's own mean of
	// those (its network_programming_duration_seconds): from the write,
	// as the EndpointSlice's last-change-trigger-time says, to the end
	// of the sync that programmed it, without the way to a connection.
	ProgrammedLone, ProgrammedChurn time.Duration
	// CPU of the proxy and its children (iptables-restore, nft) during the
	// changes, per change (measured and background ones).
	CPUPerChange float64 // seconds
	// VmRSS and VmHWM (peak) of the proxy process, MiB.
	RSSSync, PeakSync, RSSChurn, PeakChurn float64
	// Restart: a restarted process's start to the first connection reaching
	// an endpoint written while it was down; probes that failed meanwhile.
	Restart                      time.Duration
	RestartProbes, RestartFailed int
	// First packet: p50 of a blocking connect(2) to a sample ClusterIP with
	// only the sample services (Small) and with all of them (Large).
	ConnectSmall, ConnectLarge time.Duration
	// RSS over time since the process started: X seconds, Y MiB.
	RSS []plot.Point
	Err string `json:",omitempty"`
	// log is what the proxy wrote (both runs), kept beside the results.
	log string
	// profiles are kube-outpost's pprof profiles by name (heap-synced,
	// cpu-churn, heap-churned), kept beside the results.
	profiles map[string][]byte
}

// Params are a run's settings, written above the table.
type Params struct {
	Services, Endpoints, Sample, Changes int
	Lone                                 int     // lone changes per row
	Churn                                float64 // background changes a second
	ColdTimeout                          time.Duration
}

// Report is a whole run.
type Report struct {
	Params  Params
	Machine []string // "key: value" lines
	Start   time.Time
	Took    time.Duration
	Rows    []Row
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func fmtMiB(v float64) string {
	if v == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", v)
}

// ratio is ours / theirs, "—" when either is missing.
func ratio(ours, theirs float64) string {
	if ours == 0 || theirs == 0 || math.IsNaN(ours) || math.IsNaN(theirs) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", ours/theirs)
}

// column is one column of the table: its header, a row's cell, and the
// value a ratio divides (0: no ratio).
type column struct {
	head  string
	cell  func(r Row) string
	value func(r Row) float64
}

func durColumn(head string, f func(r Row) time.Duration) column {
	return column{head, func(r Row) string { return fmtDur(f(r)) }, func(r Row) float64 { return float64(f(r)) }}
}

func mibColumn(head string, f func(r Row) float64) column {
	return column{head, func(r Row) string { return fmtMiB(f(r)) }, f}
}

var columns = []column{
	{"cold sync", func(r Row) string {
		if r.ColdTimedOut {
			return "not done"
		}
		return fmtDur(r.Cold)
	}, func(r Row) float64 { return float64(r.Cold) }},
	durColumn("change p50", func(r Row) time.Duration { return quantile(r.Latencies, 0.5) }),
	durColumn("p90", func(r Row) time.Duration { return quantile(r.Latencies, 0.9) }),
	durColumn("p99", func(r Row) time.Duration { return quantile(r.Latencies, 0.99) }),
	durColumn("lone change p50", func(r Row) time.Duration { return quantile(r.Lone, 0.5) }),
	durColumn("p99", func(r Row) time.Duration { return quantile(r.Lone, 0.99) }),
	{"CPU s/change", func(r Row) string {
		if r.CPUPerChange == 0 {
			return "—"
		}
		return fmt.Sprintf("%.3f", r.CPUPerChange)
	}, func(r Row) float64 { return r.CPUPerChange }},
	mibColumn("RSS synced (MiB)", func(r Row) float64 { return r.RSSSync }),
	mibColumn("peak", func(r Row) float64 { return r.PeakSync }),
	mibColumn("RSS churned", func(r Row) float64 { return r.RSSChurn }),
	mibColumn("peak", func(r Row) float64 { return r.PeakChurn }),
	durColumn("restart", func(r Row) time.Duration { return r.Restart }),
	{"failed / probes", func(r Row) string {
		if r.RestartProbes == 0 {
			return "—"
		}
		return fmt.Sprintf("%d / %d", r.RestartFailed, r.RestartProbes)
	}, nil},
	durColumn("connect p50, sample only", func(r Row) time.Duration { return r.ConnectSmall }),
	durColumn("connect p50, all", func(r Row) time.Duration { return r.ConnectLarge }),
}

// modes returns the modes of the rows in their order.
func (rep *Report) modes() []string {
	var out []string
	for _, r := range rep.Rows {
		if !slices.Contains(out, r.Mode) {
			out = append(out, r.Mode)
		}
	}
	return out
}

func (rep *Report) row(mode, proxy string) (Row, bool) {
	for _, r := range rep.Rows {
		if r.Mode == mode && r.Proxy == proxy {
			return r, true
		}
	}
	return Row{}, false
}

// Table is the Markdown table: per mode a row for each proxy, then the
// ratios ours / kube-proxy (defaults, and min-sync 0).
func (rep *Report) Table() string {
	var b strings.Builder
	b.WriteString("| mode | proxy |")
	for _, c := range columns {
		b.WriteString(" " + c.head + " |")
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(columns)) + "\n")
	for _, m := range rep.modes() {
		for _, r := range rep.Rows {
			if r.Mode != m {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s |", m, r.Proxy)
			for _, c := range columns {
				b.WriteString(" " + c.cell(r) + " |")
			}
			b.WriteString("\n")
		}
		ours, ok := rep.row(m, kubeOutpost)
		if !ok {
			continue
		}
		for _, theirs := range []string{kubeProxy, kubeProxyMinSync0} {
			kp, ok := rep.row(m, theirs)
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "| %s | *ours / %s* |", m, theirs)
			for _, c := range columns {
				cell := "—"
				if c.value != nil && !kp.ColdTimedOut {
					cell = ratio(c.value(ours), c.value(kp))
				} else if c.value != nil && ours.Cold > 0 && c.head == "cold sync" {
					cell = fmt.Sprintf("< %s", ratio(float64(ours.Cold), float64(rep.Params.ColdTimeout)))
				}
				b.WriteString(" *" + cell + "* |")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Markdown is the whole report: the run, the machine, the table, the
// plots and the rows' errors.
// cpuProfileSeconds is how long kube-outpost's CPU profile runs from the
// start of the changes under churn; the churn goes on until it ends, so
// that it profiles nothing else.
const cpuProfileSeconds = 10

// loneGap is how long the proxy has nothing to do before a lone change:
// longer than kube-proxy's default min-sync-period (1 s), which holds a
// sync that soon after the last one, and than kube-outpost's settling
// after a sync (at most 100 ms).
const loneGap = 1200 * time.Millisecond

func (rep *Report) Markdown() string {
	var b strings.Builder
	p := rep.Params
	fmt.Fprintf(&b, "# kube-proxy and kube-outpost side by side: %d services × %d endpoints\n\n", p.Services, p.Endpoints)
	fmt.Fprintf(&b, "`make bench-compare`, %s UTC, %s.\n\n", rep.Start.UTC().Format("2006-01-02 15:04"), rep.Took.Round(time.Second))
	fmt.Fprintf(&b, "%d changes measured per row (EndpointSlice write → first connection reaching the new endpoints) under %.0f background EndpointSlice changes a second, and %d lone ones before them, each after %s without a change; %d sample services with real listeners; cold sync given up after %s.\n\n",
		p.Changes, p.Churn, p.Lone, loneGap, p.Sample, p.ColdTimeout)
	b.WriteString("## Machine\n\n")
	for _, l := range rep.Machine {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString(rep.Table())
	b.WriteString("\n![Change latency CDF](latency-cdf.png)\n\n![RSS over time](rss.png)\n")
	b.WriteString("\nkube-outpost's profiles are in profiles/: its heap after the cold sync (heap-synced) and after the churn (heap-churned), " +
		"and its CPU over the first " + fmt.Sprint(cpuProfileSeconds) + " s of the changes under churn (cpu-churn); read them with `go tool pprof -top <file>`. " +
		"Its /metrics, counted since its start, are there too: after the cold sync (metrics-synced.txt), before the churn (metrics-before-churn.txt) and after it (metrics-churned.txt).\n")
	var own []string
	for _, r := range rep.Rows {
		if r.ProgrammedLone > 0 || r.ProgrammedChurn > 0 {
			own = append(own, fmt.Sprintf("| %s | %s | %s |", r.Mode, fmtDur(r.ProgrammedLone), fmtDur(r.ProgrammedChurn)))
		}
	}
	if len(own) > 0 {
		b.WriteString("\nkube-outpost's own network programming latency, the mean of its `network_programming_duration_seconds` over the changes measured: " +
			"from the write (the EndpointSlice's last-change-trigger-time, which the bench sets as the EndpointSlice controller does) to the end of the sync that programmed it, " +
			"without the way to a connection that the table's figures include.\n\n| mode | lone changes | under churn |\n|---|---:|---:|\n" + strings.Join(own, "\n") + "\n")
	}
	var errs []string
	for _, r := range rep.Rows {
		if r.Err != "" {
			errs = append(errs, fmt.Sprintf("- %s, %s: %s", r.Mode, r.Proxy, r.Err))
		}
		if r.ChangesFailed > 0 {
			errs = append(errs, fmt.Sprintf("- %s, %s: %d of %d changes never reached (counted at the timeout)", r.Mode, r.Proxy, r.ChangesFailed, len(r.Latencies)))
		}
		if r.LoneFailed > 0 {
			errs = append(errs, fmt.Sprintf("- %s, %s: %d of %d lone changes never reached (counted at the timeout)", r.Mode, r.Proxy, r.LoneFailed, len(r.Lone)))
		}
	}
	if len(errs) > 0 {
		b.WriteString("\n## Notes\n\n" + strings.Join(errs, "\n") + "\n")
	}
	return b.String()
}

// label names a row in the plots' legends.
func (r Row) label() string { return r.Mode + ", " + r.Proxy }

// cdfChart is the change latencies of every row as cumulative distributions.
func (rep *Report) cdfChart() plot.Chart {
	c := plot.Chart{Title: "Change latency: EndpointSlice write to the first connection reaching the new endpoints",
		XLabel: "ms", YLabel: "fraction", YFromZero: true}
	for i, r := range rep.Rows {
		if len(r.Latencies) == 0 {
			continue
		}
		s := slices.Clone(r.Latencies)
		slices.Sort(s)
		pts := make([]plot.Point, 0, 2*len(s))
		for k, d := range s {
			ms := float64(d) / float64(time.Millisecond)
			pts = append(pts, plot.Point{X: ms, Y: float64(k) / float64(len(s))}, plot.Point{X: ms, Y: float64(k+1) / float64(len(s))})
		}
		c.Series = append(c.Series, plot.Series{Name: r.label(), Color: plot.Palette[i%len(plot.Palette)], Points: pts})
	}
	return c
}

// rssChart is every row's RSS since its process started.
func (rep *Report) rssChart() plot.Chart {
	c := plot.Chart{Title: "RSS (VmRSS) of each proxy: cold sync, churn, restart",
		XLabel: "seconds since the process started", YLabel: "MiB", YFromZero: true}
	for i, r := range rep.Rows {
		if len(r.RSS) > 0 {
			c.Series = append(c.Series, plot.Series{Name: r.label(), Color: plot.Palette[i%len(plot.Palette)], Points: r.RSS})
		}
	}
	return c
}

// Write puts results.md, the plots and results.json (every row's raw
// figures, latencies included) in dir.
func (rep *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := plot.WritePNG(filepath.Join(dir, "latency-cdf.png"), rep.cdfChart().Draw(1100, 520)); err != nil {
		return err
	}
	if err := plot.WritePNG(filepath.Join(dir, "rss.png"), rep.rssChart().Draw(1100, 520)); err != nil {
		return err
	}
	logs := map[string]string{}
	for _, r := range rep.Rows {
		slug := strings.NewReplacer(" ", "", "(", "-", ")", "", ",", "").Replace(r.Mode + "-" + r.Proxy)
		logs[slug] = r.log
		for name, raw := range r.profiles {
			if err := os.MkdirAll(filepath.Join(dir, "profiles"), 0o755); err != nil {
				return err
			}
			if filepath.Ext(name) == "" {
				name += ".pb.gz"
			}
			if err := os.WriteFile(filepath.Join(dir, "profiles", slug+"-"+name), raw, 0o644); err != nil {
				return err
			}
		}
	}
	return writeResults(dir, rep, rep.Markdown(), logs)
}

// writeResults puts results.json (rep as JSON), results.md and each
// non-empty log, by name, under logs/ in dir.
func writeResults(dir string, rep any, markdown string, logs map[string]string) error {
	raw, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), raw, 0o644); err != nil {
		return err
	}
	for name, log := range logs {
		if log == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "logs", name+".log"), []byte(log), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown), 0o644)
}
