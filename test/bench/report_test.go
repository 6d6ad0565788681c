package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/test/plot"
)

// TestReport writes the report of an invented run: the table has a row
// per proxy and the ratios, a timed-out cold sync shows as such, a mode
// of kube-outpost's alone (ebpf) has its row and no ratio, and the plots
// are written.
func TestReport(t *testing.T) {
	ms := time.Millisecond
	rep := &Report{
		Params:  Params{Services: 500, Endpoints: 5, Sample: 5, Changes: 3, Churn: 10, ColdTimeout: time.Minute},
		Machine: []string{"2 CPUs"},
		Start:   time.Date(2026, 12, 2, 23, 0, 0, 0, time.UTC),
		Rows: []Row{
			{Mode: "nftables", Proxy: kubeProxy, Cold: 2 * time.Second, Latencies: []time.Duration{1000 * ms, 1200 * ms, 1100 * ms},
				Lone:         []time.Duration{900 * ms, 1000 * ms},
				CPUPerChange: 0.2, RSSSync: 100, PeakSync: 120, RSSChurn: 110, PeakChurn: 130, Restart: time.Second,
				RestartProbes: 50, ConnectSmall: 20 * time.Microsecond, ConnectLarge: 22 * time.Microsecond,
				RSS: []plot.Point{{X: 0, Y: 10}, {X: 1, Y: 100}}},
			{Mode: "nftables", Proxy: kubeOutpost, Cold: time.Second, Latencies: []time.Duration{50 * ms, 60 * ms, 70 * ms},
				Lone:         []time.Duration{30 * ms, 45 * ms},
				CPUPerChange: 0.05, RSSSync: 50, PeakSync: 60, RSSChurn: 55, PeakChurn: 65, Restart: 500 * ms,
				RestartProbes: 40, ConnectSmall: 20 * time.Microsecond, ConnectLarge: 20 * time.Microsecond},
			{Mode: "iptables (nf_tables)", Proxy: kubeProxy, ColdTimedOut: true, Err: "cold sync: timed out"},
			{Mode: "iptables (nf_tables)", Proxy: kubeOutpost, Cold: 3 * time.Second},
			{Mode: "ebpf", Proxy: kubeOutpost, Cold: 800 * ms, Latencies: []time.Duration{9 * ms}, Lone: []time.Duration{4 * ms},
				ProgrammedLone: 3 * ms, ProgrammedChurn: 7 * ms},
		},
	}
	table := rep.Table()
	for _, want := range []string{
		"| nftables | kube-proxy | 2.00 s | 1.10 s | 1.20 s | 1.20 s | 900 ms | 1.00 s | 0.200 | 100 | 120 | 110 | 130 | 1.00 s | 0 / 50 | 20.0 µs | 22.0 µs |",
		"| nftables | *ours / kube-proxy* | *0.50×* | *0.05×* | *0.06×* | *0.06×* | *0.03×* | *0.04×* |",
		"| ebpf | kube-outpost | 800 ms | 9 ms | 9 ms | 9 ms | 4 ms | 4 ms |",
		"| iptables (nf_tables) | kube-proxy | not done |",
		"| iptables (nf_tables) | *ours / kube-proxy* | *< 0.05×* |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "| ebpf | *ours") {
		t.Errorf("a ratio row for ebpf mode, which has no kube-proxy row:\n%s", table)
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| ebpf | 3 ms | 7 ms |") {
		t.Errorf("results.md lacks kube-outpost's own programming latency:\n%s", md)
	}
	if !strings.Contains(string(md), "iptables (nf_tables), kube-proxy: cold sync: timed out") {
		t.Errorf("results.md lacks the row's error:\n%s", md)
	}
	for _, f := range []string{"latency-cdf.png", "rss.png", "results.json"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}
