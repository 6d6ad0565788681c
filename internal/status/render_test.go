package status

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
)

var now = time.Date(2026, 3, 1, 12, 14, 7, 0, time.UTC)

var testRenderer = renderer{now: now, loc: time.UTC}

// exampleReport is a daemon's status as the daemon builds it: the model's
// side from the fixture store, the apiserver's side as the watchers would
// report a healthy prod and a staging that went down.
func exampleReport(t *testing.T) Report {
	t.Helper()
	s := fixtureStore(t)
	st := s.Snapshot()
	r := Report{
		Mode: "iptables", ModeChoice: `mode = "auto" chose iptables, the first usable of iptables, ipvs`,
		Version: "v0.9.0", StartedAt: now.Add(-3*time.Hour - 12*time.Minute - 40*time.Second),
		LastSync:    Sync{At: now.Add(-2300 * time.Millisecond), Duration: Duration(104700 * time.Microsecond)},
		LastSuccess: Sync{At: now.Add(-2300 * time.Millisecond), Duration: Duration(104700 * time.Microsecond)},
	}
	for _, c := range st.Clusters {
		cs := ClusterFromModel(c, s.Refusals())
		switch c.Name {
		case "prod":
			cs.Server, cs.Reachable = "https://10.0.0.1:6443", true
		case "staging":
			cs.Server = "https://10.0.0.2:6443"
			cs.UnreachableSince = now.Add(-3*time.Minute - 5*time.Second)
			cs.LastErrorAt = now.Add(-4 * time.Second)
			cs.LastError = "Get \"https://10.0.0.2:6443/api/v1/services?limit=500\": dial tcp 10.0.0.2:6443: connect: connection refused"
		}
		r.Clusters = append(r.Clusters, cs)
	}
	return r
}

func TestClusterFromModel(t *testing.T) {
	r := exampleReport(t)
	prod := r.Clusters[0]
	// web (1 port, 3 endpoints), dns (2 ports, 2 each), sticky (1 port, 2),
	// legacy (1 port, none).
	if prod.Services != 4 || prod.ServicePorts != 5 || prod.Endpoints != 9 || prod.PortsWithoutEndpoints != 1 || !prod.Synced {
		t.Errorf("prod %+v", prod)
	}
	// The unsafe endpoint of web and legacy's externalIPs.
	if len(prod.Refused) != 2 || prod.Refused[0].Name != "legacy" || prod.Refused[1].Name != "web" {
		t.Errorf("prod refusals %+v", prod.Refused)
	}
	if st := r.Clusters[1]; st.Synced || st.ServicePorts != 1 || st.Refused == nil || len(st.Refused) != 0 {
		t.Errorf("staging %+v", st)
	}
}

func TestWriteReport(t *testing.T) {
	var b bytes.Buffer
	if err := testRenderer.report(&b, exampleReport(t)); err != nil {
		t.Fatal(err)
	}
	want := `kube-outpost v0.9.0, iptables mode, running since 2026-03-01 09:01:27 UTC (3h13m)
mode = "auto" chose iptables, the first usable of iptables, ipvs
last sync: ok 2.3s ago, took 105ms (partial)

CLUSTER  APISERVER              CONNECTION   SYNCED  SERVICES  PORTS  ENDPOINTS  NO ENDPOINTS  REFUSED
prod     https://10.0.0.1:6443  ok           yes     4         5      9          1             2
staging  https://10.0.0.2:6443  UNREACHABLE  NO      1         1      0          1             0

prod:
  refused (2):
    default/legacy  spec.externalIPs [203.0.113.7] are not programmed: external IPs would let a namespace owner capture this host's traffic (allow_external_ips is not set)
    default/web     EndpointSlice web-7f9c2: endpoint 127.0.0.1 is a loopback address: dropped

staging:
  apiserver unreachable since 2026-03-01 12:11:02 UTC (3m5s ago): Get "https://10.0.0.2:6443/api/v1/services?limit=500": dial tcp 10.0.0.2:6443: connect: connection refused
  not synced yet: the rules of an earlier run for this cluster stay in force until it is
`
	if got := b.String(); got != want {
		t.Errorf("report:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteReportWarnings: what the datapath cannot fix is said under the
// sync line, escaped like every other text.
func TestWriteReportWarnings(t *testing.T) {
	r := exampleReport(t)
	r.Warnings = []string{"net.ipv4.vs.conntrack is not 1 and cannot be set by the daemon\x1b[2J"}
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	if want := "WARNING: net.ipv4.vs.conntrack is not 1 and cannot be set by the daemon\\x1b[2J\n"; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}

func TestWriteReportFailedSync(t *testing.T) {
	r := exampleReport(t)
	r.LastSync = Sync{At: now.Add(-time.Second), Duration: Duration(1200 * time.Millisecond), Full: true, Error: "iptables-restore: exit status 1: line 7 failed"}
	r.LastSuccess.At = now.Add(-5 * time.Minute)
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"last sync: FAILED 1s ago after 1.2s (full): iptables-restore: exit status 1: line 7 failed\n",
		"last successful sync 5m0s ago (2026-03-01 12:09:07 UTC): its rules stay in force\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	r.LastSuccess = Sync{}
	r.Clusters[1].LastError = ""
	b.Reset()
	testRenderer.report(&b, r)
	for _, want := range []string{"no sync has succeeded yet", "staging  https://10.0.0.2:6443  connecting", "apiserver not contacted yet"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	// Without the start of the outage, only the last error's time.
	r.Clusters[1].LastError, r.Clusters[1].UnreachableSince = "connection refused", time.Time{}
	b.Reset()
	testRenderer.report(&b, r)
	for _, want := range []string{"apiserver unreachable; last error 4s ago: connection refused"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// exampleExplanations are the explanations of the fixture: iptables mode
// in agreement, iptables mode after someone deleted a rule, ipvs mode with
// a draining endpoint, and a ClusterIP:port with two protocols.
func exampleExplanations(t *testing.T) map[string]Explanation {
	t.Helper()
	s := fixtureStore(t)
	out := map[string]Explanation{}
	f, k := iptablesKernel(t, s.Snapshot())
	out["iptables"] = explain(t, s, "prod/default/web", k)
	out["dns"] = explain(t, s, "10.96.0.53:53", k)
	out["legacy"] = explain(t, s, "prod/default/legacy", k)

	ch := detail[iptables.ExplainDetail](t, out["iptables"].Ports[0]).Chain
	rules := f.Rules("nat", ch)
	if err := f.Restore(t.Context(), []byte("*nat\n-D "+ch+" "+rules[len(rules)-1]+"\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	out["mismatch"] = explain(t, s, "prod/default/web", k)

	fk, p, kv := ipvsKernel(t, s.Snapshot())
	vs := ipvs.ServiceKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: model.TCP}
	for i, a := range []string{"10.0.1.7:8080", "10.0.1.8:8080", "10.0.1.9:8080"} {
		if err := fk.SetConns(vs, netip.MustParseAddrPort(a), 12+i, 40-3*i); err != nil {
			t.Fatal(err)
		}
	}
	s.UpsertSlice("prod", slice("default", "web", "web-7f9c2", httpPort, 8080,
		ep{"10.0.1.7", ready}, ep{"10.0.1.8", ready}, ep{"10.0.1.9", terminating}, ep{"10.0.1.10", notReady}))
	if err := p.Sync(t.Context(), s.Snapshot(), false); err != nil {
		t.Fatal(err)
	}
	out["ipvs"] = explain(t, s, "prod/default/web", kv)
	return out
}

func TestWriteExplanation(t *testing.T) {
	ex := exampleExplanations(t)
	for name, wants := range map[string][]string{
		"iptables": {
			"prod/default/web (iptables mode)\n",
			"prod/default/web:http  10.96.0.10:80/TCP\n  session affinity: none\n",
			"  ENDPOINT       MODEL  KERNEL\n  10.0.1.7:8080  33.3%  33.3%\n",
			"  left out:\n    10.0.1.10:8080  not ready\n",
			"    127.0.0.1:8080  unsafe address: a loopback address\n",
			"  kernel:\n    -t nat -A PREROUTING -m comment --comment \"kube-outpost: service portals for routed traffic\" -j OUTPOST-PREROUTING\n",
			"  model and kernel agree\n",
		},
		"mismatch": {
			"  10.0.1.9:8080  33.3%  -\n",
			"  MISMATCH between model and kernel (2):\n    - endpoint 10.0.1.9:8080 is wanted, but no rule DNATs to it\n",
		},
		"legacy": {
			"refused:\n  prod/default/legacy: spec.externalIPs [203.0.113.7] are not programmed",
			"  session affinity: none\n  endpoints: none, so connections are refused\n  kernel:\n    -t filter -A FORWARD",
			"-t filter -A OUTPOST-R-2X5DPH -d 10.96.0.30/32 -p tcp -m tcp --dport 80 -m comment --comment \"prod/default/legacy:http has no endpoints\" -j REJECT --reject-with tcp-reset\n",
			"  model and kernel agree\n",
		},
		"dns": {
			"prod/kube-system/dns:dns/UDP  10.96.0.53:53/UDP\n",
			"prod/kube-system/dns:dns-tcp  10.96.0.53:53/TCP\n",
		},
		"ipvs": {
			"prod/default/web (ipvs mode)\n",
			"  ENDPOINT       MODEL     KERNEL    CONNECTIONS\n  10.0.1.7:8080  weight 1  weight 1  12 active, 40 inactive\n",
			"  10.0.1.9:8080  -         weight 0  14 active, 34 inactive\n",
			"    10.0.1.9:8080   terminating; still serving, but used only while no endpoint is ready\n",
			"  kernel: virtual server 10.96.0.10:80/TCP, scheduler rr; ClusterIP bound to outpost0\n",
			"  note: 10.0.1.9:8080 is draining: weight 0, gets no new connections, and goes when its 14 active connections end\n",
			"  model and kernel agree\n",
		},
	} {
		var b bytes.Buffer
		if err := testRenderer.explanation(&b, ex[name]); err != nil {
			t.Fatal(err)
		}
		for _, w := range wants {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: output lacks %q:\n%s", name, w, b.String())
			}
		}
		// Only the way that matters is shown: to the DNAT rules, or to
		// the reject rule.
		if name != "legacy" && strings.Contains(b.String(), "OUTPOST-FILTER") {
			t.Errorf("%s: the filter rules of a port with endpoints are shown:\n%s", name, b.String())
		}
		if name == "legacy" && strings.Contains(b.String(), "OUTPOST-SERVICES") {
			t.Errorf("%s: the nat rules of a port without endpoints are shown:\n%s", name, b.String())
		}
	}
}

// TestExamples writes the examples of docs/operations.md's status section to the
// file $KO_STATUS_EXAMPLES when set, as the renderers print them.
func TestExamples(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("$ kube-outpost status\n")
	testRenderer.report(&b, exampleReport(t))
	b.WriteString("\n$ kube-outpost status --output json\n")
	WriteJSON(&b, exampleReport(t))
	ex := exampleExplanations(t)
	for _, c := range []struct{ cmd, name string }{
		{"kube-outpost explain prod/default/web", "iptables"},
		{"kube-outpost explain 10.96.0.53:53", "dns"},
		{"kube-outpost explain prod/default/legacy", "legacy"},
		{"kube-outpost explain prod/default/web    # after someone deleted a rule", "mismatch"},
		{"kube-outpost explain prod/default/web    # ipvs mode, 10.0.1.9 terminating", "ipvs"},
	} {
		b.WriteString("\n$ " + c.cmd + "\n")
		testRenderer.explanation(&b, ex[c.name])
	}
	var back Report
	if err := json.Unmarshal([]byte(strings.SplitN(strings.SplitN(b.String(), "--output json\n", 2)[1], "\n$", 2)[0]), &back); err != nil {
		t.Fatalf("the JSON example does not read back: %v", err)
	}
	if p := os.Getenv("KO_STATUS_EXAMPLES"); p != "" {
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for _, d := range []time.Duration{0, 104700 * time.Microsecond, 3 * time.Hour, time.Nanosecond} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back.Std() != d {
			t.Errorf("%v -> %s -> %v, %v", d, b, back.Std(), err)
		}
	}
	if b, _ := json.Marshal(Duration(1500 * time.Millisecond)); string(b) != "1.5" {
		t.Errorf("1.5s as JSON: %s", b)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                    "0s",
		104700 * time.Microsecond:       "105ms",
		2345 * time.Millisecond:         "2.3s",
		3*time.Minute + 5*time.Second:   "3m5s",
		3*time.Hour + 12*time.Minute:    "3h12m",
		26*time.Hour + 59*time.Second:   "26h01m",
		80*time.Hour + 20*time.Minute:   "3d8h",
		59*time.Minute + 59*time.Second: "59m59s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestWriteExplanationWithoutEndpoints(t *testing.T) {
	ex := Explanation{Query: "prod/default/db", Mode: "iptables", Ports: []PortExplanation{{
		Key: "prod/default/db", Target: "10.96.0.40:5432/TCP", InModel: true, ClusterSynced: true, NoEndpointsReason: "no ready endpoints",
		Excluded:   []Excluded{{Addr: "10.0.9.1:5432", Reason: "not-ready", Detail: "not ready"}},
		Kernel:     KernelView{Error: "reading the nat table: iptables-save: exit status 4"},
		Mismatches: []string{},
	}}}
	var b bytes.Buffer
	if err := testRenderer.explanation(&b, ex); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  endpoints: none (no ready endpoints), so connections are refused\n  left out:\n    10.0.9.1:5432  not ready\n",
		"  kernel: could not be read: reading the nat table: iptables-save: exit status 4\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	// Unread, the kernel neither agrees nor disagrees.
	if strings.Contains(b.String(), "agree") || strings.Contains(b.String(), "MISMATCH") {
		t.Errorf("a verdict without the kernel:\n%s", b.String())
	}

	// Read, and nothing there: said so, not a bare heading.
	ex.Ports[0].Kernel = KernelView{Mode: "iptables", Lines: []string{}}
	b.Reset()
	if err := testRenderer.explanation(&b, ex); err != nil {
		t.Fatal(err)
	}
	if want := "  kernel: nothing for this port\n  model and kernel agree\n"; !strings.Contains(b.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, b.String())
	}
}

// TestWriteReportDatapath: a mode whose objects no rule listing shows
// (ebpf) has its programs and map fill under the sync line; the others
// have no such lines.
func TestWriteReportDatapath(t *testing.T) {
	r := exampleReport(t)
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "programs") || strings.Contains(b.String(), "MAP") {
		t.Errorf("a report without a datapath lists one:\n%s", b.String())
	}
	r.Datapath = &proxy.Datapath{
		Programs: []proxy.AttachedProgram{{Hook: "connect4", ID: 41, Target: "/sys/fs/cgroup/unified"}, {Hook: "sendmsg4", ID: 42, Target: "/sys/fs/cgroup/unified"}},
		Maps:     []proxy.MapFill{{Name: "ko_svc4", Entries: 1024, Capacity: 65536}, {Name: "ko_nobackend", Entries: 1, Capacity: 0}},
	}
	b.Reset()
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"programs on /sys/fs/cgroup/unified: connect4 (id 41), sendmsg4 (id 42)\n",
		"MAP           ENTRIES  CAPACITY  FILL\n",
		"ko_svc4       1024     65536     1.6%\n",
		"ko_nobackend  1        0         -\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	r.Datapath = &proxy.Datapath{}
	b.Reset()
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "programs: none attached\n") {
		t.Errorf("report of a datapath before its first sync:\n%s", b.String())
	}
}
