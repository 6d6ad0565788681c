package iptables

import (
	"context"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

func readPort(t *testing.T, r Runner, vip string, proto model.Protocol) *PortView {
	t.Helper()
	v, err := ReadPort(t.Context(), r, netip.MustParseAddrPort(vip), proto)
	if err != nil {
		t.Fatalf("ReadPort(%s/%s): %v", vip, proto, err)
	}
	return v
}

func shareOf(v *PortView, addr string) float64 {
	for _, e := range v.Endpoints {
		if e.Addr == netip.MustParseAddrPort(addr) {
			return e.Probability
		}
	}
	return -1
}

func rulesText(rs []Rule) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Table+" "+r.String())
	}
	return strings.Join(out, "\n")
}

// The shares ReadPort computes from the ladder must be the ones the packet
// tracer finds by walking the same rules: two readings of one ruleset.
func TestReadPortAgreesWithTracer(t *testing.T) {
	f := NewFake()
	st := testState()
	mustSync(t, newProxier(f, false, testMark), st, true)
	for _, tc := range []struct {
		vip   string
		proto model.Protocol
		eps   int
	}{
		{"10.96.0.10:80", model.TCP, 3},
		{"10.96.0.11:53", model.UDP, 2},
		{"10.96.0.12:9999", model.SCTP, 1},
		{"10.96.0.13:443", model.TCP, 2},
		{"10.97.0.10:443", model.TCP, 2},
	} {
		v := readPort(t, f, tc.vip, tc.proto)
		if len(v.Dispatch) != 1 || len(v.Endpoints) != tc.eps || len(v.Reject) != 0 {
			t.Errorf("%s: %d dispatch rules, %d endpoints, %d reject rules; want 1, %d, 0\n%s",
				tc.vip, len(v.Dispatch), len(v.Endpoints), len(v.Reject), tc.eps, rulesText(v.Rules))
			continue
		}
		if v.NotDNATed > 1e-9 {
			t.Errorf("%s: %.4f of new connections not DNATed", tc.vip, v.NotDNATed)
		}
		ap := netip.MustParseAddrPort(tc.vip)
		outs, _ := tracePacket(t, f, local(strings.ToLower(string(tc.proto)), ap.Addr().String(), ap.Port()))
		for _, o := range outs {
			if got := shareOf(v, o.DNAT); math.Abs(got-o.P) > 1e-9 {
				t.Errorf("%s: ReadPort gives %s a share of %.10f, the tracer %.10f", tc.vip, o.DNAT, got, o.P)
			}
		}
		for _, e := range v.Endpoints {
			if math.Abs(e.Probability-1/float64(tc.eps)) > 1e-9 {
				t.Errorf("%s: %s has %.10f, want an equal share", tc.vip, e.Addr, e.Probability)
			}
		}
	}
}

func TestReadPort(t *testing.T) {
	f := NewFake()
	st := testState()
	web := model.PortKey{Cluster: "alpha", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP}
	mustSync(t, newProxier(f, false, testMark), st, true)

	v := readPort(t, f, "10.96.0.10:80", model.TCP)
	if v.Chain != serviceChain(web) {
		t.Errorf("chain %q, want %q", v.Chain, serviceChain(web))
	}
	if len(v.Rules) != 4 || !strings.Contains(v.Rules[0].Spec, "MARK") {
		t.Errorf("service chain rules: want the mark and three DNAT rules:\n%s", rulesText(v.Rules))
	}
	// Local and routed packets: both hooks, the routed_clients, then the
	// cluster's range.
	wantPath := []string{
		"nat -A PREROUTING", "-j OUTPOST-PREROUTING",
		"nat -A OUTPUT", "-j OUTPOST-SERVICES",
		"nat -A OUTPOST-PREROUTING -s 192.168.1.0/24", "-g OUTPOST-SERVICES",
		"nat -A OUTPOST-SERVICES -d 10.96.0.0/16", "-j " + clusterChain("alpha"),
	}
	if got := rulesText(v.Path); !containsInOrder(got, wantPath) {
		t.Errorf("path:\n%s\nwant, in order: %q", got, wantPath)
	}
	if got := rulesText(v.RejectPath); !containsInOrder(got, []string{"filter -A FORWARD", "-j OUTPOST-FORWARD", "filter -A OUTPUT",
		"filter -A OUTPOST-FORWARD -s 192.168.1.0/24", "-d 10.96.0.0/16", "-j " + rejectChain("alpha")}) {
		t.Errorf("reject path:\n%s", got)
	}
	if !strings.Contains(v.Dispatch[0].Spec, "alpha/default/web:http") {
		t.Errorf("dispatch rule without its comment: %s", v.Dispatch[0])
	}

	// Another protocol or port of the same ClusterIP is another thing.
	for _, q := range []struct {
		vip   string
		proto model.Protocol
	}{{"10.96.0.10:80", model.UDP}, {"10.96.0.10:81", model.TCP}, {"10.96.0.99:80", model.TCP}} {
		if v := readPort(t, f, q.vip, q.proto); len(v.Dispatch)+len(v.Reject)+len(v.Endpoints) != 0 || v.Chain != "" {
			t.Errorf("%s/%s matched rules of another port: %+v", q.vip, q.proto, v)
		}
	}

	// A port without endpoints: a reject rule, no dispatch.
	v = readPort(t, f, "10.96.0.14:53", model.UDP)
	if len(v.Dispatch) != 0 || len(v.Reject) != 1 || !strings.Contains(v.Reject[0].Spec, "--reject-with icmp-port-unreachable") {
		t.Errorf("port without endpoints: dispatch %q, reject %q", rulesText(v.Dispatch), rulesText(v.Reject))
	}
	if v.NotDNATed != 0 || len(v.Endpoints) != 0 {
		t.Errorf("port without endpoints has a ladder: %+v", v)
	}
}

func TestReadPortAffinity(t *testing.T) {
	f := NewFake()
	sp := withAffinity(svc("alpha", "default", "sticky", "", model.TCP, "10.96.0.20", 443, "10.0.5.1:8443", "10.0.5.2:8443"), 3*time.Hour)
	mustSync(t, newProxier(f, false, testMark), state(cluster("alpha", true, alphaCIDRs, sp)), true)
	v := readPort(t, f, "10.96.0.20:443", model.TCP)
	if v.AffinitySeconds != 10800 {
		t.Errorf("affinity %d s, want 10800", v.AffinitySeconds)
	}
	// The --update rules only take clients seen before: new connections
	// still split evenly.
	if len(v.Endpoints) != 2 || shareOf(v, "10.0.5.1:8443") != 0.5 || shareOf(v, "10.0.5.2:8443") != 0.5 {
		t.Errorf("endpoints %+v, want two halves", v.Endpoints)
	}
}

// What someone else did to the rules shows: a DNAT rule deleted leaves a
// share of connections undirected, and a dispatch to another chain is read
// as it is.
func TestReadPortTampered(t *testing.T) {
	f := NewFake()
	mustSync(t, newProxier(f, false, testMark), testState(), true)
	web := model.PortKey{Cluster: "alpha", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP}
	ch := serviceChain(web)
	rules := f.Rules("nat", ch)
	last := rules[len(rules)-1]
	mustRestore(t, f, "*nat\n-D "+ch+" "+last+"\nCOMMIT\n")
	v := readPort(t, f, "10.96.0.10:80", model.TCP)
	if len(v.Endpoints) != 2 || math.Abs(v.NotDNATed-1.0/3) > 1e-9 {
		t.Errorf("after deleting the last DNAT rule: endpoints %+v, not DNATed %.4f; want 2 and 1/3", v.Endpoints, v.NotDNATed)
	}

	mustRestore(t, f, "*nat\n:OUTPOST-S-STRAY - [0:0]\n-A OUTPOST-S-STRAY -p tcp -j DNAT --to-destination 10.9.9.9:80\n"+
		"-I "+clusterChain("alpha")+" 1 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j OUTPOST-S-STRAY\nCOMMIT\n")
	v = readPort(t, f, "10.96.0.10:80", model.TCP)
	if len(v.Dispatch) != 2 || v.Chain != "OUTPOST-S-STRAY" || len(v.Endpoints) != 1 || shareOf(v, "10.9.9.9:80") != 1 {
		t.Errorf("stray dispatch first: %d dispatch rules, chain %s, endpoints %+v", len(v.Dispatch), v.Chain, v.Endpoints)
	}
}

func TestReadPortIPv6(t *testing.T) {
	f := NewFake()
	mustSync(t, newProxier(f, true, testMark), testState(), true)
	v := readPort(t, f, "[fd00:96::10]:80", model.TCP)
	if len(v.Dispatch) != 1 || len(v.Endpoints) != 3 || shareOf(v, "[fd00:1::2]:8080") < 0.33 {
		t.Errorf("IPv6 port: %+v", v)
	}
	if v := readPort(t, f, "[fd00:96::14]:80", model.TCP); len(v.Reject) != 1 {
		t.Errorf("IPv6 port without endpoints: reject %q", rulesText(v.Reject))
	}
}

// savedRunner replays fixed iptables-save output, as a real kernel prints
// it: nf_tables-backed iptables 1.8 rounds probabilities to 11 digits and
// prints the recent match's defaults.
type savedRunner map[string]string

func (s savedRunner) Save(_ context.Context, table string) ([]byte, error) {
	return []byte(s[table]), nil
}
func (savedRunner) Restore(context.Context, []byte) error { panic("ReadPort must not write") }
func (savedRunner) HasRandomFully() bool                  { return true }
func (savedRunner) ListChain(context.Context, string, string) ([]string, error) {
	panic("ReadPort reads whole tables")
}

func TestReadPortRealSaveOutput(t *testing.T) {
	r := savedRunner{
		"nat": `# Generated by iptables-save v1.8.9 (nf_tables) on Sun Mar  1 12:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OUTPOST-C-ABCDEF - [0:0]
:OUTPOST-SERVICES - [0:0]
:OUTPOST-S-ABCDEFGHIJKLMNOPQR - [0:0]
-A PREROUTING -m comment --comment "kube-outpost: service portals for routed traffic" -j OUTPOST-SERVICES
-A OUTPUT -m comment --comment "kube-outpost: service portals for local processes" -j OUTPOST-SERVICES
-A OUTPOST-C-ABCDEF -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment prod/default/web:http -j OUTPOST-S-ABCDEFGHIJKLMNOPQR
-A OUTPOST-SERVICES -d 10.96.0.0/12 -m comment --comment "cluster prod" -j OUTPOST-C-ABCDEF
-A OUTPOST-S-ABCDEFGHIJKLMNOPQR -j MARK --or-mark 0x100000
-A OUTPOST-S-ABCDEFGHIJKLMNOPQR -p tcp -m recent --update --seconds 600 --reap --name OUTPOST-AAAA --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.0.1.7:8080
-A OUTPOST-S-ABCDEFGHIJKLMNOPQR -p tcp -m statistic --mode random --probability 0.33333333349 -m recent --set --name OUTPOST-AAAA --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.0.1.7:8080
-A OUTPOST-S-ABCDEFGHIJKLMNOPQR -p tcp -m statistic --mode random --probability 0.50000000000 -m recent --set --name OUTPOST-BBBB --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.0.1.8:8080
-A OUTPOST-S-ABCDEFGHIJKLMNOPQR -p tcp -m recent --set --name OUTPOST-CCCC --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.0.1.9:8080
COMMIT
# Completed on Sun Mar  1 12:00:00 2026
`,
		"filter": `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:OUTPOST-FILTER - [0:0]
:OUTPOST-R-ABCDEF - [0:0]
-A FORWARD -m comment --comment "kube-outpost: reject services without endpoints" -j OUTPOST-FILTER
-A OUTPUT -m comment --comment "kube-outpost: reject services without endpoints" -j OUTPOST-FILTER
-A OUTPOST-FILTER -d 10.96.0.0/12 -m comment --comment "cluster prod" -j OUTPOST-R-ABCDEF
-A OUTPOST-R-ABCDEF -d 10.96.0.11/32 -p tcp -m tcp --dport 80 -m comment --comment "prod/default/empty:http has no endpoints" -j REJECT --reject-with tcp-reset
COMMIT
`,
	}
	v := readPort(t, r, "10.96.0.10:80", model.TCP)
	if v.Chain != "OUTPOST-S-ABCDEFGHIJKLMNOPQR" || v.AffinitySeconds != 600 || len(v.Path) != 3 || len(v.RejectPath) != 3 {
		t.Errorf("chain %s, affinity %d, path %d rules, reject path %d rules", v.Chain, v.AffinitySeconds, len(v.Path), len(v.RejectPath))
	}
	for _, a := range []string{"10.0.1.7:8080", "10.0.1.8:8080", "10.0.1.9:8080"} {
		if got := shareOf(v, a); math.Abs(got-1.0/3) > 1e-9 {
			t.Errorf("%s: share %.10f, want 1/3 (to the kernel's rounding)", a, got)
		}
	}
	if v := readPort(t, r, "10.96.0.11:80", model.TCP); len(v.Reject) != 1 || len(v.Dispatch) != 0 {
		t.Errorf("reject rule not found: %+v", v)
	}
}

func TestReadPortSaveError(t *testing.T) {
	f := NewFake()
	_, err := ReadPort(t.Context(), failingSave{f}, netip.MustParseAddrPort("10.96.0.10:80"), model.TCP)
	if err == nil || !strings.Contains(err.Error(), "reading the nat table") {
		t.Errorf("err = %v, want one naming the table", err)
	}
}

type failingSave struct{ *Fake }

func (failingSave) Save(context.Context, string) ([]byte, error) {
	return nil, context.DeadlineExceeded
}

// containsInOrder says whether every part appears in s, each after the
// previous one.
func containsInOrder(s string, parts []string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}
