package status

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
)

func explain(t *testing.T, s *model.Store, q string, k Kernel) Explanation {
	t.Helper()
	ex, err := BuildExplanation(t.Context(), s.Snapshot(), s.Refusals(), mustQuery(t, q), k)
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

func TestExplainIPTables(t *testing.T) {
	s := fixtureStore(t)
	_, k := iptablesKernel(t, s.Snapshot())

	p := onePort(t, explain(t, s, "prod/default/web", k))
	wantAgree(t, p)
	if p.Target != "10.96.0.10:80/TCP" || p.Key != "prod/default/web:http" || !p.InModel || !p.ClusterSynced {
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
	v := p.Kernel.IPTables
	if v == nil || len(v.Endpoints) != 3 || len(v.Dispatch) != 1 || !strings.HasPrefix(v.Dispatch[0], "-t nat -A OUTPOST-C-") ||
		v.Chain != iptables.ServiceChain(model.PortKey{Cluster: "prod", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP}) {
		t.Errorf("kernel view %+v", v)
	}

	// Both DNS ports answer on one ClusterIP:port.
	ex := explain(t, s, "10.96.0.53:53", k)
	if len(ex.Ports) != 2 || ex.Ports[0].Target != "10.96.0.53:53/UDP" || ex.Ports[1].Target != "10.96.0.53:53/TCP" {
		t.Fatalf("DNS ports %+v", ex.Ports)
	}
	wantAgree(t, ex.Ports[0])
	wantAgree(t, ex.Ports[1])

	// Affinity as the kernel keeps it.
	p = onePort(t, explain(t, s, "prod/default/sticky", k))
	wantAgree(t, p)
	if p.Affinity.Std().Seconds() != 600 || p.Kernel.IPTables.AffinitySeconds != 600 {
		t.Errorf("affinity model %v, kernel %ds", p.Affinity.Std(), p.Kernel.IPTables.AffinitySeconds)
	}

	// A refused part of a service, and a port without endpoints: refused
	// by the kernel, as it should be.
	ex = explain(t, s, "prod/default/legacy", k)
	p = onePort(t, ex)
	wantAgree(t, p)
	if len(ex.Refused) != 1 || !strings.Contains(ex.Refused[0].Reason, "externalIPs") || ex.Refused[0].Cluster != "prod" {
		t.Errorf("refused %+v", ex.Refused)
	}
	if p.NoEndpointsReason != "no endpoints" || len(p.Kernel.IPTables.Reject) != 1 || len(p.Kernel.IPTables.Dispatch) != 0 {
		t.Errorf("port without endpoints: %+v", p)
	}
}

// The model moved on and the kernel did not (or someone changed it): each
// difference is named.
func TestExplainIPTablesMismatches(t *testing.T) {
	s := fixtureStore(t)
	f, k := iptablesKernel(t, s.Snapshot())
	web := iptables.ServiceChain(model.PortKey{Cluster: "prod", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP})

	rules := f.Rules("nat", web)
	if err := f.Restore(t.Context(), []byte("*nat\n-D "+web+" "+rules[len(rules)-1]+"\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/web", k)),
		"endpoint 10.0.1.9:8080 is wanted, but no rule DNATs to it",
		"33.3% of new connections leave "+web+" without a DNAT")

	// An endpoint turns ready in the model, unsynced: it is wanted, and
	// the shares of the others are off.
	s.UpsertSlice("prod", slice("default", "web", "web-7f9c2", httpPort, 8080,
		ep{"10.0.1.7", ready}, ep{"10.0.1.8", ready}, ep{"10.0.1.9", ready}, ep{"10.0.1.10", ready}))
	_, fresh := iptablesKernel(t, fixtureStore(t).Snapshot())
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/web", fresh)),
		"endpoint 10.0.1.10:8080 is wanted", "endpoint 10.0.1.7:8080 gets 33.3% of new connections, not 25.0%")

	// Someone deleted the hook of local processes.
	var hook string
	for _, r := range f.Rules("nat", "OUTPUT") {
		if strings.HasSuffix(r, "-j OUTPOST-SERVICES") {
			hook = r
		}
	}
	if err := f.Restore(t.Context(), []byte("*nat\n-D OUTPUT "+hook+"\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	wantMismatch(t, onePort(t, explain(t, s, "10.96.0.53:53/UDP", k)), "no rule of nat OUTPUT jumps to OUTPOST-SERVICES")

	// A service without endpoints whose reject rule is gone.
	var reject string
	for _, ch := range f.Chains("filter") {
		for _, r := range f.Rules("filter", ch) {
			if strings.Contains(r, "10.96.0.30/32") {
				reject = "-D " + ch + " " + r
			}
		}
	}
	if err := f.Restore(t.Context(), []byte("*filter\n"+reject+"\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/legacy", k)), "no reject rule for 10.96.0.30:80/TCP")
}

// Rules for a service the model no longer has: a target query shows them,
// so that stale rules can be found.
func TestExplainKernelOnly(t *testing.T) {
	s := fixtureStore(t)
	_, k := iptablesKernel(t, s.Snapshot())
	s.DeleteService("prod", "default", "web")

	ex := explain(t, s, "10.96.0.10:80", k)
	p := onePort(t, ex)
	if p.InModel || p.Target != "10.96.0.10:80/TCP" || p.Cluster != "prod" || len(p.Kernel.IPTables.Endpoints) != 3 {
		t.Errorf("kernel-only port %+v", p)
	}
	wantMismatch(t, p, "the kernel still sends 10.96.0.10:80/TCP to OUTPOST-S-", "the model has no such service port")
	if len(ex.Notes) != 1 || !strings.Contains(ex.Notes[0], `No service port of cluster "prod" has 10.96.0.10:80`) {
		t.Errorf("notes %q", ex.Notes)
	}

	// By name there is nothing to look for in the kernel.
	_, err := BuildExplanation(t.Context(), s.Snapshot(), s.Refusals(), mustQuery(t, "prod/default/web"), k)
	if !errors.Is(err, model.ErrNotFound) {
		t.Errorf("by name: %v, want ErrNotFound", err)
	}
	// Nor anything in the kernel for an unused address.
	_, err = BuildExplanation(t.Context(), s.Snapshot(), s.Refusals(), mustQuery(t, "10.96.0.99:80"), k)
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
	k := Kernel{Mode: "iptables", IPTables: func(bool) iptables.Runner { return brokenRunner{iptables.NewFake()} }}
	p := onePort(t, explain(t, s, "prod/default/web", k))
	if !strings.Contains(p.Kernel.Error, "reading the nat table") || len(p.Mismatches) != 0 || len(p.Endpoints) != 3 {
		t.Errorf("kernel error: %+v", p)
	}
	// Looking for rules left behind for a ClusterIP:port the model lacks:
	// still not found, and the reason it could not be checked.
	_, err := BuildExplanation(t.Context(), s.Snapshot(), nil, mustQuery(t, "10.96.0.99:80"), k)
	if !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), "the kernel could not be read") {
		t.Errorf("unknown target, kernel unreadable: %v", err)
	}
	k.IPTables = func(bool) iptables.Runner { return nil }
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
	v := pe.Kernel.IPVS
	if v == nil || !v.Bound || v.Server == nil || v.Server.Scheduler != "rr" || len(v.Server.Destinations) != 3 || pe.Endpoints[0].Weight != 1 {
		t.Fatalf("ipvs view %+v, endpoints %+v", v, pe.Endpoints)
	}
	sticky := onePort(t, explain(t, s, "prod/default/sticky", k))
	wantAgree(t, sticky)
	if srv := sticky.Kernel.IPVS.Server; !srv.Persistent || srv.TimeoutSeconds != 600 {
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
	k.Scheduler = "wlc"
	if err := fk.DelDest(ipvs.Service{ServiceKey: vs, Scheduler: "rr"}, ipvs.Destination{Addr: pe.Endpoints[0].Addr}); err != nil {
		t.Fatal(err)
	}
	if err := fk.DelAddr(vs.VIP); err != nil {
		t.Fatal(err)
	}
	wantMismatch(t, onePort(t, explain(t, s, "prod/default/web", k)),
		"the virtual server's scheduler is rr, not wlc",
		"endpoint 10.0.1.7:8080 is wanted, but the virtual server has no such real server",
		"10.96.0.10:80 is not bound to outpost0")
}
