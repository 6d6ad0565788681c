package bench

import (
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

// The variants of a fleet row: the daemon and how it is run. The baseline
// row runs none.
const (
	fleetBaseline           = "baseline (no daemon)"
	fleetOutpost            = "kube-outpost"
	fleetOutpostNoWatchList = "kube-outpost, watch-list off"
	fleetKubeProxy          = "kube-proxy"
)

// FleetParams are a fleet run's settings, written above the tables.
type FleetParams struct {
	Fleet               []int // fleet sizes, the baseline's 0 not included
	Services, Endpoints int
	Changes             int
	ChangeEvery         time.Duration // between two EndpointSlice writes
	Settle, Rest        time.Duration
	SyncTimeout         time.Duration
	Mode                string // the daemons' datapath
}

// FleetRow is N daemons of one variant against the apiserver, freshly
// restarted for the row. Every figure is the apiserver's: its CPU time
// and VmRSS (/proc/<pid>/stat, status), the bytes it sent the daemons
// (each daemon's relay), and counters of its /metrics. Zero is "not
// measured" where a row stopped early (Err says why).
type FleetRow struct {
	Variant string
	N       int

	// Sync: the daemons' start to every daemon's rules holding every
	// ClusterIP.
	Sync         time.Duration
	SyncTimedOut bool
	SyncCPU      float64 // apiserver CPU seconds over the sync
	SyncBytes    int64   // apiserver to all daemons during the sync
	SyncPeakRSS  float64 // MiB, the highest VmRSS sampled during the sync
	// The initial lists as the apiserver counted them: watch-list
	// requests it finished streaming, and LIST requests of services and
	// endpointslices.
	WatchLists, Lists float64

	// SettledRSS is the apiserver's median VmRSS, MiB, over the second
	// half of its settling, before any daemon started.
	SettledRSS float64

	// Rest: Rest long after the sync, nothing changing.
	Rest      time.Duration
	RestCPU   float64 // apiserver CPU seconds over Rest
	RestRSS   float64 // MiB, median VmRSS sampled over Rest
	RestBytes int64   // apiserver to all daemons over Rest

	// Changes: Changes EndpointSlice writes, ChangeEvery apart, from the
	// first write to every daemon's rules holding the last one.
	Changes       int
	ChangesWindow time.Duration
	ChangesCPU    float64 // apiserver CPU seconds over the window
	ChangesBytes  int64   // apiserver to all daemons over the window
	// The apiserver's own count of the endpointslices watch events it
	// encoded over the window (apiserver_watch_events_total and
	// apiserver_watch_events_sizes_sum): before compression, HTTP/2 and
	// TLS, summed over every watcher.
	ChangeEvents, ChangeEventBytes float64
	ChangesLate                    int // daemons that had not seen the last change in time

	// ToServer is what the daemons sent the apiserver over the whole row.
	ToServer int64
	Err      string `json:",omitempty"`
	// log is the first daemon's output, kept beside the results.
	log string
}

// FleetReport is a whole fleet run.
type FleetReport struct {
	Params  FleetParams
	Machine []string
	// Uses says what each daemon asks of the apiserver, as far as the
	// cost goes (the client-go settings, the content type).
	Uses  []string
	Start time.Time
	Took  time.Duration
	Rows  []FleetRow
}

func (rep *FleetReport) baseline() (FleetRow, bool) {
	for _, r := range rep.Rows {
		if r.N == 0 && r.Err == "" {
			return r, true
		}
	}
	return FleetRow{}, false
}

// restRate is the row's CPU seconds a second at rest.
func (r FleetRow) restRate() float64 {
	if r.Rest <= 0 {
		return math.NaN()
	}
	return r.RestCPU / r.Rest.Seconds()
}

// restBytesRate is the row's bytes a second to the daemons at rest.
func (r FleetRow) restBytesRate() float64 {
	if r.Rest <= 0 {
		return math.NaN()
	}
	return float64(r.RestBytes) / r.Rest.Seconds()
}

// changesCPU is the CPU of the changes above what the apiserver spends at
// rest in as long.
func (r FleetRow) changesCPU() float64 {
	return r.ChangesCPU - r.restRate()*r.ChangesWindow.Seconds()
}

// perDaemon is a row's cost per daemon over the baseline: NaN where a
// figure is missing.
type perDaemon struct {
	SyncCPU      float64 // CPU seconds, above the baseline's rest rate
	SyncMiB      float64 // sent per daemon for its initial lists
	RestMilli    float64 // CPU millicores (ms a second) at rest
	RestRSSMiB   float64 // apiserver VmRSS at rest, over its own before the daemons
	RestKiBMin   float64 // KiB a minute at rest
	ChangeKiB    float64 // KiB on the wire per change, the rest's rate taken out
	ChangeEvKiB  float64 // KiB of watch events per change, the apiserver's count, less the baseline's
	ChangeCPUms  float64 // CPU ms per change, the rest and the baseline's changes taken out
	WatchListPer float64 // watch-list requests per daemon
	ListPer      float64 // LIST requests per daemon
}

func (rep *FleetReport) perDaemon(r FleetRow) perDaemon {
	nan := math.NaN()
	p := perDaemon{nan, nan, nan, nan, nan, nan, nan, nan, nan, nan}
	if r.N == 0 {
		return p
	}
	n := float64(r.N)
	base, ok := rep.baseline()
	if r.Sync > 0 {
		p.SyncMiB = float64(r.SyncBytes) / n / (1 << 20)
		p.WatchListPer, p.ListPer = r.WatchLists/n, r.Lists/n
		if ok {
			p.SyncCPU = (r.SyncCPU - base.restRate()*r.Sync.Seconds()) / n
		}
	}
	if r.Rest > 0 {
		p.RestKiBMin = r.restBytesRate() * 60 / 1024 / n
		if ok {
			p.RestMilli = (r.restRate() - base.restRate()) * 1000 / n
			// Against the row's own settled apiserver: a restart moves
			// the RSS by more than a few daemons do.
			p.RestRSSMiB = ((r.RestRSS - r.SettledRSS) - (base.RestRSS - base.SettledRSS)) / n
		}
	}
	if c := float64(r.Changes); c > 0 && r.ChangesWindow > 0 {
		p.ChangeKiB = (float64(r.ChangesBytes) - r.restBytesRate()*r.ChangesWindow.Seconds()) / 1024 / n / c
		if ok && base.Changes > 0 {
			// The baseline has events too: the apiserver watches
			// EndpointSlices itself.
			p.ChangeEvKiB = (r.ChangeEventBytes/c - base.ChangeEventBytes/float64(base.Changes)) / 1024 / n
			p.ChangeCPUms = (r.changesCPU()/c - base.changesCPU()/float64(base.Changes)) * 1000 / n
		}
	}
	return p
}

func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// PerDaemonTable is the cost of one more daemon, each figure over the
// baseline row (no daemon at all).
func (rep *FleetReport) PerDaemonTable() string {
	var b strings.Builder
	b.WriteString("| daemon | N | all synced | sync: apiserver CPU s | sync: MiB sent | initial lists: watch-list / LIST | rest: apiserver CPU millicores | rest: apiserver RSS MiB | rest: KiB sent a minute | change: KiB sent | change: KiB of watch events | change: apiserver CPU ms |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Rows {
		if r.N == 0 {
			continue
		}
		p := rep.perDaemon(r)
		sync := fmtDur(r.Sync)
		if r.SyncTimedOut {
			sync = "not done"
		}
		lists := "—"
		if !math.IsNaN(p.WatchListPer) {
			lists = fmt.Sprintf("%s / %s", fmtNum(p.WatchListPer, 1), fmtNum(p.ListPer, 1))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Variant, r.N, sync,
			fmtNum(p.SyncCPU, 3), fmtNum(p.SyncMiB, 2), lists, fmtNum(p.RestMilli, 2), fmtNum(p.RestRSSMiB, 1),
			fmtNum(p.RestKiBMin, 1), fmtNum(p.ChangeKiB, 2), fmtNum(p.ChangeEvKiB, 2), fmtNum(p.ChangeCPUms, 3))
	}
	return b.String()
}

// RawTable is every row as measured, the baseline included: what the
// per-daemon figures are computed from.
func (rep *FleetReport) RawTable() string {
	var b strings.Builder
	b.WriteString("| daemon | N | settled RSS MiB | sync: apiserver CPU s | sync: peak RSS MiB | sync: MiB sent | rest | rest: apiserver CPU s | rest: RSS MiB | rest: KiB sent | changes | window | changes: apiserver CPU s | changes: KiB sent | watch events / KiB | MiB from the daemons |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Rows {
		mib := func(v int64) string {
			if r.N == 0 {
				return "—"
			}
			return fmtNum(float64(v)/(1<<20), 2)
		}
		kib := func(v int64) string {
			if r.N == 0 {
				return "—"
			}
			return fmtNum(float64(v)/1024, 1)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s / %s | %s |\n", r.Variant, r.N,
			fmtNum(r.SettledRSS, 0), fmtNum(r.SyncCPU, 2), fmtNum(r.SyncPeakRSS, 0), mib(r.SyncBytes), fmtDur(r.Rest), fmtNum(r.RestCPU, 2),
			fmtNum(r.RestRSS, 0), kib(r.RestBytes), r.Changes, fmtDur(r.ChangesWindow), fmtNum(r.ChangesCPU, 2),
			kib(r.ChangesBytes), fmtNum(r.ChangeEvents, 0), fmtNum(r.ChangeEventBytes/1024, 1), mib(r.ToServer))
	}
	return b.String()
}

// Markdown is the whole report.
func (rep *FleetReport) Markdown() string {
	var b strings.Builder
	p := rep.Params
	fmt.Fprintf(&b, "# The fleet's cost to the cluster: %d services × %d endpoints\n\n", p.Services, p.Endpoints)
	fmt.Fprintf(&b, "`make bench-fleet`, %s UTC, %s. Fleet sizes %v, each daemon in a network namespace of its own, %s mode, all against one lab kube-apiserver, restarted before every row and left %s to settle. At rest: %s after the sync. Changes: %d EndpointSlice writes, %s apart.\n\n",
		rep.Start.UTC().Format("2006-01-02 15:04"), rep.Took.Round(time.Second), strings.Trim(strings.Join(strings.Fields(fmt.Sprint(p.Fleet)), ", "), "[]"), p.Mode, p.Settle, p.Rest, p.Changes, p.ChangeEvery)
	b.WriteString("## Machine\n\n")
	for _, l := range rep.Machine {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	if len(rep.Uses) > 0 {
		b.WriteString("\n## What the daemons ask of the apiserver\n\n")
		for _, l := range rep.Uses {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	b.WriteString("\n## Per daemon, over the baseline\n\n")
	b.WriteString("Each figure is the row's minus the baseline row's (no daemon), divided by N. " +
		"The apiserver's RSS at rest is first taken less its own before the row's daemons started (it moves with each restart). " +
		"Sync CPU is over the baseline's rate at rest; a change's bytes are the window's minus the row's own rate at rest; " +
		"a change's CPU is the window's minus the row's rate at rest, less the baseline's (the writes themselves), per change; " +
		"its watch events are the apiserver's count less the baseline's (the apiserver's own watchers). " +
		"CPU time is read in ticks of 10 ms: a figure of a few ticks is noise.\n\n")
	b.WriteString(rep.PerDaemonTable())
	b.WriteString("\n## Raw\n\n")
	b.WriteString(rep.RawTable())
	var notes []string
	for _, r := range rep.Rows {
		if r.Err != "" {
			notes = append(notes, fmt.Sprintf("- %s, N=%d: %s", r.Variant, r.N, r.Err))
		}
		if r.ChangesLate > 0 {
			notes = append(notes, fmt.Sprintf("- %s, N=%d: %d daemons had not seen the last change in time", r.Variant, r.N, r.ChangesLate))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}

// Write puts results.md, results.json (every row's raw figures) and the
// first daemon's log of each row in dir.
func (rep *FleetReport) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logs := map[string]string{}
	for _, r := range rep.Rows {
		logs[strings.NewReplacer(" ", "", ",", "-").Replace(fmt.Sprintf("%s-n%d", r.Variant, r.N))] = r.log
	}
	return writeResults(dir, rep, rep.Markdown(), logs)
}
