package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The report of `make bench-clusters` (clusters_test.go).

// ClustersRow is one kube-outpost: the services it watched and what it
// measured. A zero figure is "not measured" (Err says why).
type ClustersRow struct {
	Name     string // "1 cluster × 9999", "3 clusters × 3333"
	Services int
	// Cold: process start to every ClusterIP of every cluster in the
	// kernel and each cluster's sample service answering.
	Cold time.Duration
	// VmRSS and VmHWM after the cold sync and after the changes, and the
	// Go heap in use after a collection at the cold sync; MiB.
	RSSSync, PeakSync, HeapSync, RSSChanged, PeakChanged float64
	// Latencies of lone changes, round the clusters' sample services.
	Latencies []time.Duration
	Err       string `json:",omitempty"`
	log       string
	heap      []byte // the heap profile at the cold sync
}

// ClustersReport is a whole run.
type ClustersReport struct {
	Clusters, PerCluster, Endpoints int
	Mode                            string
	Machine                         []string
	Start                           time.Time
	Took                            time.Duration
	Rows                            []ClustersRow
}

// Markdown is the report's table, the several clusters' row against the
// one cluster's.
func (rep *ClustersReport) Markdown() string {
	changes := 0
	for _, r := range rep.Rows {
		changes = max(changes, len(r.Latencies))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# One cluster against %d: %d services × %d endpoints in all\n\n", rep.Clusters, rep.Clusters*rep.PerCluster, rep.Endpoints)
	fmt.Fprintf(&b, "`make bench-clusters`, %s UTC, %s; kube-outpost in %s mode, every setting at its default (profiling on); %d lone changes per row.\n\n",
		rep.Start.UTC().Format("2006-01-02 15:04"), rep.Took.Round(time.Second), rep.Mode, changes)
	b.WriteString("## Machine\n\n")
	for _, m := range rep.Machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString("| kube-outpost watching | services | cold sync | RSS synced (MiB) | peak | Go heap in use | RSS after the changes | peak | change p50 | p99 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %s |", r.Name, r.Services, fmtDur(r.Cold),
			r.RSSSync, r.PeakSync, r.HeapSync, r.RSSChanged, r.PeakChanged, fmtDur(quantile(r.Latencies, .5)), fmtDur(quantile(r.Latencies, .99)))
		if r.Err != "" {
			fmt.Fprintf(&b, " %s", r.Err)
		}
		b.WriteString("\n")
	}
	if len(rep.Rows) == 2 {
		one, many := rep.Rows[0], rep.Rows[1]
		fmt.Fprintf(&b, "| *%d clusters / 1* | | *%s* | *%s* | *%s* | *%s* | *%s* | *%s* | *%s* | *%s* |\n", rep.Clusters,
			ratio(many.Cold.Seconds(), one.Cold.Seconds()), ratio(many.RSSSync, one.RSSSync), ratio(many.PeakSync, one.PeakSync),
			ratio(many.HeapSync, one.HeapSync), ratio(many.RSSChanged, one.RSSChanged), ratio(many.PeakChanged, one.PeakChanged),
			ratio(quantile(many.Latencies, .5).Seconds(), quantile(one.Latencies, .5).Seconds()),
			ratio(quantile(many.Latencies, .99).Seconds(), quantile(one.Latencies, .99).Seconds()))
	}
	b.WriteString("\nEach row's daemon log and heap profile at the cold sync are in logs/ and profiles/.\n")
	return b.String()
}

// Write puts the report, each row's log and heap profile in dir.
func (rep *ClustersReport) Write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "profiles"), 0o755); err != nil {
		return err
	}
	logs := map[string]string{}
	for i, r := range rep.Rows {
		slug := fmt.Sprintf("row%d", i+1)
		logs[slug] = r.log
		if r.heap != nil {
			if err := os.WriteFile(filepath.Join(dir, "profiles", slug+"-heap-synced.pb.gz"), r.heap, 0o644); err != nil {
				return err
			}
		}
	}
	return writeResults(dir, rep, rep.Markdown(), logs)
}
