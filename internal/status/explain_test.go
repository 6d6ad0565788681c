package status

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
)

func explain(t *testing.T, s *model.Store, q string, k kernel) Explanation {
	t.Helper()
	ex, err := BuildExplanation(t.Context(), s.Snapshot(), s.Refusals(), mustQuery(t, q), k.mode, k.ex)
	if err != nil {
		t.Fatalf("BuildExplanation(%s): %v", q, err)
	}
	return ex
}

func onePort(t *testing.T, ex Explanation) PortExplanation {
	t.Helper()
	if len(ex.Ports) != 1 {
		t.Fatalf("%s: %d ports, want 1: %+v", ex.Query, len(ex.Ports), ex.Ports)
	}
	return ex.Ports[0]
}

func wantAgree(t *testing.T, p PortExplanation) {
	t.Helper()
	if p.Kernel.Error != "" || len(p.Mismatches) != 0 {
		t.Errorf("%s: kernel error %q, mismatches:\n  %s", p.Key, p.Kernel.Error, strings.Join(p.Mismatches, "\n  "))
	}
}

// wantMismatch checks that some mismatch mentions each of parts.
func wantMismatch(t *testing.T, p PortExplanation, parts ...string) {
	t.Helper()
	all := strings.Join(p.Mismatches, "\n")
	for _, s := range parts {
		if !strings.Contains(all, s) {
			t.Errorf("%s: no mismatch mentions %q; mismatches:\n  %s", p.Key, s, strings.Join(p.Mismatches, "\n  "))
		}
	}
}

// detail decodes the kernel's detail as the mode's view, as a script would.
func detail[T any](t *testing.T, p PortExplanation) T {
	t.Helper()
	var d T
	if err := json.Unmarshal(p.Kernel.Detail, &d); err != nil {
		t.Fatalf("%s: kernel detail %s: %v", p.Key, p.Kernel.Detail, err)
	}
	return d
}

func hasLine(lines []string, prefix string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func TestExplainIPTables(t *testing.T) {
	s := fixtureStore(t)
	_, k := iptablesKernel(t, s.Snapshot())

	ex := explain(t, s, "prod/default/web", k)
	p := onePort(t, ex)
	wantAgree(t, p)
	if ex.Mode != "iptables" || p.Target != "10.96.0.10:80/TCP" || p.Key != "prod/default/web:http" || !p.InModel || !p.ClusterSynced {
		t.Errorf("port %+v", p)
	}
	if len(p.Endpoints) != 3 || math.Abs(p.Endpoints[0].Probability-1.0/3) > 1e-9 || p.Endpoints[0].Weight != 0 {
		t.Errorf("endpoints %+v, want three with 1/3 each", p.Endpoints)
	}
	var excl []string
	for _, e := range p.Excluded {
		excl = append(excl, e.Addr+" "+e.Reason)
	}
	if got, want := strings.Join(excl, ", "), "10.0.1.10:8080 not-ready, 10.0.1.11:8080 terminating, 127.0.0.1:8080 unsafe-address"; got != want {
		t.Errorf("excluded %q, want %q", got, want)
	}
	kv := p.Kernel
	if kv.Mode != "iptables" || kv.Empty || len(kv.Endpoints) != 3 || math.Abs(kv.Endpoints[2].Probability-1.0/3) > 1e-9 ||
		!hasLine(kv.Lines, "-t nat -A OUTPOST-C-") {
		t.Errorf("kernel view %+v", kv)
	}
	if d := detail[iptables.ExplainDetail](t, p); len(d.Dispatch) != 1 || !strings.HasPrefix(d.Chain, "OUTPOST-S-") || len(d.Endpoints) != 3 {
		t.Errorf("kernel detail %+v", d)
	}

	// Both DNS ports answer on one ClusterIP:port.
	ex = explain(t, s, "10.96.0.53:53", k)
	if len(ex.Ports) != 2 || ex.Ports[0].Target != "10.96.0.53:53/UDP" || ex.Ports[1].Target != "10.96.0.53:53/TCP" {
		t.Fatalf("DNS ports %+v", ex.Ports)
	}
	wantAgree(t, ex.Ports[0])
	wantAgree(t, ex.Ports[1])

	// Affinity as the kernel keeps it.
	p = onePort(t, explain(t, s, "prod/default/sticky", k))
	wantAgree(t, p)
	if d := detail[iptables.ExplainDetail](t, p); p.Affinity.Std().Seconds() != 600 || d.AffinitySeconds != 600 {
		t.Errorf("affinity model %v, kernel %ds", p.Affinity.Std(), d.AffinitySeconds)
	}

	// A refused part of a service, and a port without endpoints: refused
	// by the kernel, as it should be.
	ex = explain(t, s, "prod/default/legacy", k)
	p = onePort(t, ex)
	wantAgree(t, p)
	if len(ex.Refused) != 1 || !strings.Contains(ex.Refused[0].Reason, "externalIPs") || ex.Refused[0].Cluster != "prod" {
		t.Errorf("refused %+v", ex.Refused)
	}
	if d := detail[iptables.ExplainDetail](t, p); p.NoEndpointsReason != "no endpoints" || len(d.Reject) != 1 || len(d.Dispatch) != 0 ||
		p.Kernel.Empty || len(p.Kernel.Endpoints) != 0 || !hasLine(p.Kernel.Lines, "-t filter -A OUTPOST-R-") {
		t.Errorf("port without endpoints: %+v", p)
	}
}

// The mode's mismatches are the port's, against the shares the mode gives
// the model's endpoints.
func TestExplainMismatches(t *testing.T) {
	s := fixtureStore(t)
	f, k := iptablesKernel(t, s.Snapshot())

	ch := detail[iptables.ExplainDetail](t, onePort(t, explain(t, s, "prod/default/web", k))).Chain
	rules := f.Rules("nat", ch)
	if err := f.Restore(t.Context(), []byte("*nat\n-D "+ch+" "+rules[len(rules)-1]+"\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/web", k)),
		"endpoint 10.0.1.9:8080 is wanted, but no rule DNATs to it",
		"33.3% of new connections leave "+ch+" without a DNAT")

	// An endpoint turns ready in the model, unsynced: it is wanted, and
	// the shares of the others are off.
	s.UpsertSlice("prod", slice("default", "web", "web-7f9c2", httpPort, 8080,
		ep{"10.0.1.7", ready}, ep{"10.0.1.8", ready}, ep{"10.0.1.9", ready}, ep{"10.0.1.10", ready}))
	_, fresh := iptablesKernel(t, fixtureStore(t).Snapshot())
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/web", fresh)),
		"endpoint 10.0.1.10:8080 is wanted", "endpoint 10.0.1.7:8080 gets 33.3% of new connections, not 25.0%")
}

// Rules for a service the model no longer has: a target query shows them,
// so that stale rules can be found.
func TestExplainKernelOnly(t *testing.T) {
	s := fixtureStore(t)
	_, k := iptablesKernel(t, s.Snapshot())
	s.DeleteService("prod", "default", "web")

	ex := explain(t, s, "10.96.0.10:80", k)
	p := onePort(t, ex)
	if p.InModel || p.Target != "10.96.0.10:80/TCP" || p.Cluster != "prod" || len(p.Kernel.Endpoints) != 3 {
		t.Errorf("kernel-only port %+v", p)
	}
	wantMismatch(t, p, "the kernel still sends 10.96.0.10:80/TCP to OUTPOST-S-", "the model has no such service port")
	if len(ex.Notes) != 1 || !strings.Contains(ex.Notes[0], `No service port of cluster "prod" has 10.96.0.10:80`) {
		t.Errorf("notes %q", ex.Notes)
	}

	// By name there is nothing to look for in the kernel.
	_, err := BuildExplanation(t.Context(), s.Snapshot(), s.Refusals(), mustQuery(t, "prod/default/web"), k.mode, k.ex)
	if !errors.Is(err, model.ErrNotFound) {
		t.Errorf("by name: %v, want ErrNotFound", err)
	}
	// Nor anything in the kernel for an unused address.
	_, err = BuildExplanation(t.Context(), s.Snapshot(), s.Refusals(), mustQuery(t, "10.96.0.99:80"), k.mode, k.ex)
	if !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unused address: %v, want ErrNotFound", err)
	}
}

func TestExplainRefusedAndUnsynced(t *testing.T) {
	s := fixtureStore(t)
	s.UpsertService("prod", service("default", "outside", "192.168.5.5", httpPort))
	_, k := iptablesKernel(t, s.Snapshot())

	// Refused as a whole: no port, but the reason.
	ex := explain(t, s, "prod/default/outside", k)
	if len(ex.Ports) != 0 || len(ex.Refused) != 1 || !strings.Contains(ex.Refused[0].Reason, "outside the cluster's service_cidrs") {
		t.Errorf("refused service: %+v", ex)
	}

	// A cluster that has not synced: said first, and its rules (none
	// here) differ.
	ex = explain(t, s, "staging/default/web", k)
	p := onePort(t, ex)
	if p.ClusterSynced || len(ex.Notes) != 1 || !strings.Contains(ex.Notes[0], `cluster "staging" has not synced yet`) {
		t.Errorf("unsynced: notes %q, port %+v", ex.Notes, p)
	}
	wantMismatch(t, p, "no reject rule")
}

func TestExplainKernelError(t *testing.T) {
	s := fixtureStore(t)
	k := kernel{"iptables", iptables.NewExplainerFor(map[bool]iptables.Runner{false: brokenRunner{iptables.NewFake()}})}
	p := onePort(t, explain(t, s, "prod/default/web", k))
	if !strings.Contains(p.Kernel.Error, "reading the nat table") || len(p.Mismatches) != 0 || len(p.Endpoints) != 3 ||
		len(p.Kernel.Lines)+len(p.Kernel.Endpoints)+len(p.Kernel.Detail) != 0 {
		t.Errorf("kernel error: %+v", p)
	}
	// Looking for rules left behind for a ClusterIP:port the model lacks:
	// still not found, and the reason it could not be checked.
	_, err := BuildExplanation(t.Context(), s.Snapshot(), nil, mustQuery(t, "10.96.0.99:80"), k.mode, k.ex)
	if !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), "the kernel could not be read") {
		t.Errorf("unknown target, kernel unreadable: %v", err)
	}
	k.ex = iptables.NewExplainerFor(nil)
	if p := onePort(t, explain(t, s, "prod/default/web", k)); !strings.Contains(p.Kernel.Error, "no IPv4 iptables rules") {
		t.Errorf("no runner: %q", p.Kernel.Error)
	}
}

type brokenRunner struct{ *iptables.Fake }

func (brokenRunner) Save(context.Context, string) ([]byte, error) {
	return nil, errors.New("iptables-save: exit status 4")
}

func TestExplainIPVS(t *testing.T) {
	s := fixtureStore(t)
	fk, p, k := ipvsKernel(t, s.Snapshot())

	pe := onePort(t, explain(t, s, "prod/default/web", k))
	wantAgree(t, pe)
	d := detail[ipvs.ExplainDetail](t, pe)
	if !d.Bound || d.Server == nil || d.Server.Scheduler != "rr" || len(d.Server.Destinations) != 3 || pe.Endpoints[0].Weight != 1 ||
		pe.Endpoints[0].Probability != 0 || len(pe.Kernel.Endpoints) != 3 || pe.Kernel.Endpoints[0].Weight != 1 {
		t.Fatalf("ipvs detail %+v, endpoints %+v, kernel %+v", d, pe.Endpoints, pe.Kernel)
	}
	sticky := onePort(t, explain(t, s, "prod/default/sticky", k))
	wantAgree(t, sticky)
	if srv := detail[ipvs.ExplainDetail](t, sticky).Server; srv == nil || !srv.Persistent || srv.TimeoutSeconds != 600 {
		t.Errorf("sticky virtual server %+v", srv)
	}
	wantAgree(t, onePort(t, explain(t, s, "prod/default/legacy", k)))

	// An endpoint leaves with connections open: it drains at weight 0,
	// which is expected, not a mismatch.
	vs := ipvs.ServiceKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: model.TCP}
	if err := fk.SetConns(vs, pe.Endpoints[2].Addr, 4, 1); err != nil {
		t.Fatal(err)
	}
	s.UpsertSlice("prod", slice("default", "web", "web-7f9c2", httpPort, 8080, ep{"10.0.1.7", ready}, ep{"10.0.1.8", ready}))
	if err := p.Sync(t.Context(), s.Snapshot(), false); err != nil {
		t.Fatal(err)
	}
	pe = onePort(t, explain(t, s, "prod/default/web", k))
	wantAgree(t, pe)
	if len(pe.Notes) != 1 || !strings.Contains(pe.Notes[0], "10.0.1.9:8080 is draining") || !strings.Contains(pe.Notes[0], "4 active") {
		t.Errorf("notes %q", pe.Notes)
	}

	// Someone else's changes.
	if err := fk.DelAddr(vs.VIP); err != nil {
		t.Fatal(err)
	}
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/web", k)), "10.96.0.10:80 is not bound to outpost0")
}

// stubExplainer is a mode status knows nothing of: it gives weight 7,
// and says what it was asked.
type stubExplainer struct {
	asked []proxy.Want
	view  proxy.PortView
}

func (*stubExplainer) Share(int) proxy.EndpointShare { return proxy.EndpointShare{Weight: 7} }

func (s *stubExplainer) ExplainPort(_ context.Context, w proxy.Want) (proxy.PortView, error) {
	s.asked = append(s.asked, w)
	return s.view, nil
}

// Whatever the mode: the model's shares are the mode's, the mode is asked
// about the model's port, and what it found is the port's kernel side.
func TestExplainAnyMode(t *testing.T) {
	s := fixtureStore(t)
	stub := &stubExplainer{view: proxy.PortView{
		Lines:      []string{"pipe 10.96.0.20:443 to 2 endpoints"},
		Endpoints:  []proxy.KernelEndpoint{{Addr: netip.MustParseAddrPort("10.0.3.1:8443"), EndpointShare: proxy.EndpointShare{Weight: 7}, Conns: "1 open"}},
		Mismatches: []string{"10.0.3.2:8443 is missing"},
		Notes:      []string{"a note"},
		Detail:     map[string]int{"pipes": 1},
	}}
	ex := explain(t, s, "prod/default/sticky", kernel{"pipe", stub})
	p := onePort(t, ex)
	if ex.Mode != "pipe" || p.Kernel.Mode != "pipe" || len(p.Endpoints) != 2 || p.Endpoints[0].Weight != 7 || p.Endpoints[0].Probability != 0 {
		t.Errorf("explanation %+v", ex)
	}
	if len(stub.asked) != 1 {
		t.Fatalf("asked %d times", len(stub.asked))
	}
	w := stub.asked[0]
	if w.Key == nil || w.Key.Name != "sticky" || w.Target != netip.MustParseAddrPort("10.96.0.20:443") || w.Protocol != model.TCP ||
		w.Affinity != 10*time.Minute || len(w.Endpoints) != 2 || w.Endpoints[1].Addr != netip.MustParseAddrPort("10.0.3.2:8443") || w.Endpoints[1].Weight != 7 {
		t.Errorf("asked %+v", w)
	}
	if !slices.Equal(p.Kernel.Lines, stub.view.Lines) || !slices.Equal(p.Kernel.Endpoints, stub.view.Endpoints) ||
		!slices.Equal(p.Mismatches, stub.view.Mismatches) || !slices.Equal(p.Notes, stub.view.Notes) || string(p.Kernel.Detail) != `{"pipes":1}` {
		t.Errorf("port %+v", p)
	}

	// A port the model lacks is asked about without a key, and shown
	// only when the kernel has something for it.
	stub.asked = nil
	stub.view = proxy.PortView{Empty: true}
	if _, err := BuildExplanation(t.Context(), s.Snapshot(), nil, mustQuery(t, "10.96.0.99:80/UDP"), "pipe", stub); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("nothing in the kernel: %v, want ErrNotFound", err)
	}
	if len(stub.asked) != 1 || stub.asked[0].Key != nil || stub.asked[0].Target != netip.MustParseAddrPort("10.96.0.99:80") || stub.asked[0].Protocol != model.UDP {
		t.Errorf("asked %+v", stub.asked)
	}
	stub.view.Empty = false
	if p := onePort(t, explain(t, s, "10.96.0.99:80/UDP", kernel{"pipe", stub})); p.InModel || len(p.Endpoints) != 0 || p.Kernel.Lines == nil {
		t.Errorf("kernel-only port %+v", p)
	}
}
