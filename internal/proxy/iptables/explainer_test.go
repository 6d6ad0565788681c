package iptables

import (
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// explainerOver programs st into a Fake per family and explains from them.
func explainerOver(t *testing.T, st *model.State) (v4 *Fake, ex proxy.Explainer) {
	t.Helper()
	v4, v6 := NewFake(), NewFake()
	mustSync(t, newProxier(v4, false, testMark), st, true)
	mustSync(t, newProxier(v6, true, testMark), st, true)
	return v4, NewExplainerFor(map[bool]Runner{false: v4, true: v6})
}

var webKey = model.PortKey{Cluster: "alpha", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP}

func explainPort(t *testing.T, ex proxy.Explainer, w proxy.Want) proxy.PortView {
	t.Helper()
	v, err := ex.ExplainPort(t.Context(), w)
	if err != nil {
		t.Fatalf("ExplainPort(%s/%s): %v", w.Target, w.Protocol, err)
	}
	return v
}

// want is the Want of the port of st at key.
func want(ex proxy.Explainer, st *model.State, key model.PortKey) proxy.Want {
	sp := modeltest.ClusterOf(st, key.Cluster).Ports[key]
	return proxy.PortWant(ex, sp, sp.ClusterIP)
}

// wantMismatch checks that some mismatch mentions each of parts.
func wantMismatch(t *testing.T, v proxy.PortView, parts ...string) {
	t.Helper()
	all := strings.Join(v.Mismatches, "\n")
	for _, s := range parts {
		if !strings.Contains(all, s) {
			t.Errorf("no mismatch mentions %q; mismatches:\n  %s", s, strings.Join(v.Mismatches, "\n  "))
		}
	}
}

// What the backend wrote, read back, agrees with the model, in every
// port of both families.
func TestExplainAgrees(t *testing.T) {
	st := testState()
	_, ex := explainerOver(t, st)
	for _, c := range st.Clusters {
		for _, sp := range c.Ports {
			v := explainPort(t, ex, proxy.PortWant(ex, sp, sp.ClusterIP))
			if len(v.Mismatches) != 0 || v.Empty || len(v.Endpoints) != len(sp.Endpoints) {
				t.Errorf("%s: empty %v, %d endpoints, mismatches %q", sp.Key, v.Empty, len(v.Endpoints), v.Mismatches)
			}
			for _, e := range v.Endpoints {
				if math.Abs(e.Probability-1/float64(len(sp.Endpoints))) > 1e-9 || e.Weight != 0 || e.Conns != "" {
					t.Errorf("%s: kernel endpoint %+v, want an equal probability", sp.Key, e)
				}
			}
		}
	}
	if sh := ex.Share(3); math.Abs(sh.Probability-1.0/3) > 1e-12 || sh.Weight != 0 {
		t.Errorf("Share(3) = %+v", sh)
	}
}

// Lines are the way that matters: the nat rules to the DNAT rules of a
// port with endpoints, the filter rules to the reject rule of one without.
func TestExplainLines(t *testing.T) {
	st := testState()
	_, ex := explainerOver(t, st)
	v := explainPort(t, ex, want(ex, st, webKey))
	d := v.Detail.(ExplainDetail)
	if d.Chain != serviceChain(webKey) || len(d.Dispatch) != 1 || len(d.Endpoints) != 3 || len(d.Reject) != 0 {
		t.Errorf("detail %+v", d)
	}
	lines := strings.Join(v.Lines, "\n")
	if !containsInOrder(lines, []string{"-t nat -A PREROUTING ", "-t nat -A OUTPOST-SERVICES -d 10.96.0.0/16",
		"-t nat -A " + clusterChain("alpha") + " -d 10.96.0.10/32", "-t nat -A " + serviceChain(webKey) + " "}) || strings.Contains(lines, "-t filter") {
		t.Errorf("lines of a port with endpoints:\n%s", lines)
	}
	if got, want := len(v.Lines), len(d.Path)+len(d.Dispatch)+len(d.Rules); got != want {
		t.Errorf("%d lines, want path, dispatch and rules: %d", got, want)
	}

	empty := model.PortKey{Cluster: "alpha", Namespace: "default", Name: "empty", Port: "http", Protocol: model.TCP}
	v = explainPort(t, ex, want(ex, st, empty))
	lines = strings.Join(v.Lines, "\n")
	if v.Empty || len(v.Endpoints) != 0 || strings.Contains(lines, "-t nat") ||
		!containsInOrder(lines, []string{"-t filter -A OUTPUT ", "-j OUTPOST-FILTER", "-t filter -A " + rejectChain("alpha"), "-j REJECT"}) {
		t.Errorf("port without endpoints: empty %v, endpoints %+v, lines:\n%s", v.Empty, v.Endpoints, lines)
	}
	if len(v.Mismatches) != 0 {
		t.Errorf("mismatches %q", v.Mismatches)
	}
}

// The model moved on, or someone changed the rules: each difference is
// named.
func TestExplainMismatches(t *testing.T) {
	st := testState()
	f, ex := explainerOver(t, st)
	web := serviceChain(webKey)

	// An endpoint turns ready in the model: it is wanted, and the shares
	// of the others are off.
	four := state(cluster("alpha", true, alphaCIDRs, svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80,
		"10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080", "10.0.1.4:8080")))
	wantMismatch(t, explainPort(t, ex, want(ex, four, webKey)),
		"endpoint 10.0.1.4:8080 is wanted, but no rule DNATs to it", "endpoint 10.0.1.1:8080 gets 33.3% of new connections, not 25.0%")
	// Or one goes, and affinity is turned on.
	sp := withAffinity(withEndpoints(modeltest.ClusterOf(st, "alpha").Ports[webKey], "10.0.1.1:8080", "10.0.1.2:8080"), 10*time.Minute)
	wantMismatch(t, explainPort(t, ex, proxy.PortWant(ex, sp, sp.ClusterIP)),
		"the kernel DNATs 33.3% of new connections to 10.0.1.3:8080, which the model does not want",
		"ClientIP affinity: the kernel keeps clients not at all, the model wants 600s")

	rules := f.Rules("nat", web)
	mustRestore(t, f, "*nat\n-D "+web+" "+rules[len(rules)-1]+"\nCOMMIT\n")
	wantMismatch(t, explainPort(t, ex, want(ex, st, webKey)),
		"endpoint 10.0.1.3:8080 is wanted, but no rule DNATs to it",
		"33.3% of new connections leave "+web+" without a DNAT")

	mustRestore(t, f, "*nat\n:OUTPOST-S-STRAY - [0:0]\n-A OUTPOST-S-STRAY -p tcp -j DNAT --to-destination 10.9.9.9:80\n"+
		"-I "+clusterChain("alpha")+" 1 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j OUTPOST-S-STRAY\nCOMMIT\n")
	wantMismatch(t, explainPort(t, ex, want(ex, st, webKey)),
		"2 dispatch rules match 10.96.0.10:80/TCP; the first one wins",
		"the dispatch rule jumps to OUTPOST-S-STRAY, not to "+web)

	// Someone deleted the hooks of local and routed packets.
	for _, ch := range []string{"OUTPUT", "PREROUTING"} {
		for _, r := range f.Rules("nat", ch) {
			if strings.Contains(r, "-j OUTPOST-") {
				mustRestore(t, f, "*nat\n-D "+ch+" "+r+"\nCOMMIT\n")
			}
		}
	}
	dns := model.PortKey{Cluster: "alpha", Namespace: "kube-system", Name: "dns", Port: "dns", Protocol: model.UDP}
	wantMismatch(t, explainPort(t, ex, want(ex, st, dns)),
		"no rule of nat OUTPUT jumps to OUTPOST-SERVICES", "no rule of nat PREROUTING jumps to OUTPOST-PREROUTING")

	// A port without endpoints whose reject rule is gone, and one that a
	// dispatch rule still sends on.
	empty := model.PortKey{Cluster: "alpha", Namespace: "default", Name: "empty", Port: "http", Protocol: model.TCP}
	for _, ch := range f.Chains("filter") {
		for _, r := range f.Rules("filter", ch) {
			if strings.Contains(r, "10.96.0.14/32") && strings.Contains(r, "--dport 80 ") {
				mustRestore(t, f, "*filter\n-D "+ch+" "+r+"\nCOMMIT\n")
			}
		}
	}
	wantMismatch(t, explainPort(t, ex, want(ex, st, empty)), "no reject rule for 10.96.0.14:80/TCP")
	gone := withEndpoints(modeltest.ClusterOf(st, "alpha").Ports[webKey])
	wantMismatch(t, explainPort(t, ex, proxy.PortWant(ex, gone, gone.ClusterIP)),
		"a dispatch rule still sends 10.96.0.10:80/TCP to OUTPOST-S-STRAY, although it has no endpoints")
}

// Rules for a port the model does not have (Want.Key nil): found, and
// named as left behind.
func TestExplainNotInModel(t *testing.T) {
	_, ex := explainerOver(t, testState())
	v := explainPort(t, ex, proxy.Want{Target: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: model.TCP})
	if v.Empty || len(v.Endpoints) != 3 {
		t.Errorf("left behind: empty %v, endpoints %+v", v.Empty, v.Endpoints)
	}
	wantMismatch(t, v, "the kernel still sends 10.96.0.10:80/TCP to "+serviceChain(webKey)+", but the model has no such service port")
	v = explainPort(t, ex, proxy.Want{Target: netip.MustParseAddrPort("[fd00:96::14]:53"), Protocol: model.UDP})
	wantMismatch(t, v, "the kernel still refuses [fd00:96::14]:53/UDP, but the model has no such service port")
	v = explainPort(t, ex, proxy.Want{Target: netip.MustParseAddrPort("10.96.0.99:80"), Protocol: model.TCP})
	if !v.Empty || len(v.Mismatches) != 0 {
		t.Errorf("unused address: empty %v, mismatches %q", v.Empty, v.Mismatches)
	}
}

func TestExplainErrors(t *testing.T) {
	ex := NewExplainerFor(map[bool]Runner{false: failingSave{NewFake()}})
	w := proxy.Want{Target: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: model.TCP}
	if _, err := ex.ExplainPort(t.Context(), w); err == nil || !strings.Contains(err.Error(), "reading the nat table") {
		t.Errorf("iptables-save failing: %v", err)
	}
	w.Target = netip.MustParseAddrPort("[fd00:96::10]:80")
	if _, err := ex.ExplainPort(t.Context(), w); err == nil || err.Error() != "kube-outpost programs no IPv6 iptables rules on this host" {
		t.Errorf("a family without rules: %v", err)
	}
}

// The runners are made at the first ExplainPort, once, and only for the
// families the backends program.
func TestExplainerMakesRunnersLazily(t *testing.T) {
	var made []bool
	ex := lazyExplainer([]bool{false}, func(v6 bool) (Runner, error) {
		made = append(made, v6)
		if v6 {
			return nil, errors.New("no ip6tables")
		}
		return NewFake(), nil
	}, slog.New(slog.DiscardHandler))
	if len(made) != 0 {
		t.Fatalf("runners made before anyone asked: %v", made)
	}
	w := proxy.Want{Target: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: model.TCP}
	for range 2 {
		if _, err := ex.ExplainPort(t.Context(), w); err != nil {
			t.Fatal(err)
		}
	}
	w.Target = netip.MustParseAddrPort("[fd00:96::10]:80")
	if _, err := ex.ExplainPort(t.Context(), w); err == nil || !strings.Contains(err.Error(), "no IPv6 iptables rules") {
		t.Errorf("IPv6, not configured: %v", err)
	}
	if !slices.Equal(made, []bool{false}) {
		t.Errorf("runners made: %v, want one IPv4 runner", made)
	}
}
