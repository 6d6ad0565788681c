package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFleetReport writes the report of an invented run: each per-daemon
// figure is the row's over the baseline's, divided by N.
func TestFleetReport(t *testing.T) {
	s := time.Second
	base := FleetRow{Variant: fleetBaseline, SettledRSS: 299, Rest: 10 * s, RestCPU: 1, RestRSS: 300,
		Changes: 10, ChangesWindow: 2 * s, ChangesCPU: 0.4, // 0.2 s of it the writes
		ChangeEventBytes: 4 * 1024}
	two := FleetRow{Variant: fleetOutpost, N: 2, Sync: 4 * s, SyncCPU: 2.4, SyncBytes: 4 << 20, WatchLists: 4,
		SettledRSS: 289, Rest: 10 * s, RestCPU: 1.2, RestRSS: 300, RestBytes: 20 * 1024,
		Changes: 10, ChangesWindow: 2 * s, ChangesCPU: 0.84, ChangesBytes: 44 * 1024, ChangeEventBytes: 20 * 1024}
	rep := &FleetReport{
		Params:  FleetParams{Fleet: []int{2}, Services: 200, Endpoints: 5, Changes: 10, Mode: "nftables"},
		Machine: []string{"2 CPUs"},
		Uses:    []string{"kube-outpost: JSON"},
		Start:   time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC),
		Rows: []FleetRow{base, two,
			{Variant: fleetKubeProxy, N: 2, SyncTimedOut: true, Err: "sync: timed out"}},
	}
	p := rep.perDaemon(two)
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"sync CPU s", p.SyncCPU, (2.4 - 0.1*4) / 2},
		{"sync MiB", p.SyncMiB, 2},
		{"watch-lists", p.WatchListPer, 2},
		{"rest millicores", p.RestMilli, (0.12 - 0.1) * 1000 / 2},
		// 11 MiB over its own settled RSS, of which 1 the baseline's drift.
		{"rest RSS MiB", p.RestRSSMiB, 5},
		{"rest KiB/min", p.RestKiBMin, 2 * 60 / 2},
		// 44 KiB over 2 s, of which 4 KiB the rest's 2 KiB/s.
		{"change KiB", p.ChangeKiB, 40.0 / 2 / 10},
		// 20 KiB of events, 4 of them the apiserver's own watcher's.
		{"change event KiB", p.ChangeEvKiB, 16.0 / 2 / 10},
		// (0.84 - 0.24) / 10 per change, less the baseline's (0.4 - 0.2) / 10.
		{"change CPU ms", p.ChangeCPUms, (0.06 - 0.02) * 1000 / 2},
	} {
		if d := c.got - c.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	table := rep.PerDaemonTable()
	for _, want := range []string{
		"| kube-outpost | 2 | 4.00 s | 1.000 | 2.00 | 2.0 / 0.0 | 10.00 | 5.0 | 60.0 | 2.00 | 0.80 | 20.000 |",
		"| kube-proxy | 2 | not done | — |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, fleetBaseline) {
		t.Errorf("the per-daemon table has the baseline:\n%s", table)
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| baseline (no daemon) | 0 |", "kube-proxy, N=2: sync: timed out", "kube-outpost: JSON"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "results.json")); err != nil || st.Size() == 0 {
		t.Errorf("results.json: %v", err)
	}
}
