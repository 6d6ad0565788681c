package ipvs

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

func explainPort(t *testing.T, ex proxy.Explainer, w proxy.Want) proxy.PortView {
	t.Helper()
	v, err := ex.ExplainPort(t.Context(), w)
	if err != nil {
		t.Fatalf("ExplainPort(%s/%s): %v", w.Target, w.Protocol, err)
	}
	return v
}

func wantOf(ex proxy.Explainer, sp *model.ServicePort) proxy.Want {
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

// What the backend programmed, read back, agrees with the model.
func TestExplainAgrees(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), true)
	e.k.TakeOps()
	ex := NewExplainerFor(e.k, "rr")
	for _, sp := range []*model.ServicePort{webHTTP, webMetrics, dnsUDP, dnsTCP, sticky, sig, empty, betaAPI} {
		v := explainPort(t, ex, wantOf(ex, sp))
		if len(v.Mismatches) != 0 || len(v.Notes) != 0 || v.Empty != (len(sp.Endpoints) == 0) || len(v.Endpoints) != len(sp.Endpoints) {
			t.Errorf("%s: empty %v, %d endpoints, mismatches %q, notes %q", sp.Key, v.Empty, len(v.Endpoints), v.Mismatches, v.Notes)
		}
	}
	if sh := ex.Share(3); sh.Weight != 1 || sh.Probability != 0 {
		t.Errorf("Share(3) = %+v", sh)
	}
	if ops := e.k.TakeOps(); len(ops) != 0 {
		t.Errorf("explain changed the kernel: %q", ops)
	}
}

func TestExplainLines(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), true)
	must(t, e.k.SetConns(key("10.96.0.10", 80, model.TCP), ap("10.0.1.2:8080"), 3, 7))
	e.k.TakeOps()
	ex := NewExplainerFor(e.k, "rr")

	v := explainPort(t, ex, wantOf(ex, webHTTP))
	if want := []string{"virtual server 10.96.0.10:80/TCP, scheduler rr; ClusterIP bound to outpost0"}; !slices.Equal(v.Lines, want) {
		t.Errorf("lines %q, want %q", v.Lines, want)
	}
	wantEps := []proxy.KernelEndpoint{
		{Addr: ap("10.0.1.1:8080"), EndpointShare: proxy.EndpointShare{Weight: 1}, Conns: "0 active, 0 inactive"},
		{Addr: ap("10.0.1.2:8080"), EndpointShare: proxy.EndpointShare{Weight: 1}, Conns: "3 active, 7 inactive"},
	}
	if !slices.Equal(v.Endpoints, wantEps) {
		t.Errorf("endpoints %+v, want %+v", v.Endpoints, wantEps)
	}
	if d := v.Detail.(ExplainDetail); !d.Bound || d.Server == nil || d.Server.Scheduler != "rr" || d.Server.Persistent || len(d.Server.Destinations) != 2 ||
		d.Server.Destinations[1].ActiveConns != 3 {
		t.Errorf("detail %+v", d)
	}

	v = explainPort(t, ex, wantOf(ex, sticky))
	if want := "virtual server 10.96.0.20:443/TCP, scheduler rr, persistent 10800s; ClusterIP bound to outpost0"; len(v.Lines) != 1 || v.Lines[0] != want {
		t.Errorf("lines %q, want %q", v.Lines, want)
	}
	if d := v.Detail.(ExplainDetail); d.Server == nil || !d.Server.Persistent || d.Server.TimeoutSeconds != 10800 {
		t.Errorf("sticky detail %+v", d.Server)
	}
	v = explainPort(t, ex, wantOf(ex, empty))
	if want := "no virtual server for 10.96.0.30:80/TCP; ClusterIP bound to outpost0"; !v.Empty || len(v.Lines) != 1 || v.Lines[0] != want {
		t.Errorf("port without endpoints: empty %v, lines %q, want %q", v.Empty, v.Lines, want)
	}
	if ops := e.k.TakeOps(); len(ops) != 0 {
		t.Errorf("explain changed the kernel: %q", ops)
	}
}

// A removed endpoint with connections drains at weight 0: a note, not a
// mismatch.
func TestExplainDraining(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), true)
	must(t, e.k.SetConns(key("10.96.0.10", 80, model.TCP), ap("10.0.1.2:8080"), 4, 1))
	web := withEndpoints(webHTTP, "10.0.1.1:8080")
	e.sync(testState(web, webMetrics, dnsUDP, dnsTCP, sticky, sig, empty, web6), false)
	ex := NewExplainerFor(e.k, "rr")
	v := explainPort(t, ex, wantOf(ex, web))
	if len(v.Mismatches) != 0 || len(v.Notes) != 1 || !strings.Contains(v.Notes[0], "10.0.1.2:8080 is draining") || !strings.Contains(v.Notes[0], "4 active") {
		t.Errorf("mismatches %q, notes %q", v.Mismatches, v.Notes)
	}
	if len(v.Endpoints) != 2 || v.Endpoints[1].Weight != 0 || v.Endpoints[1].Conns != "4 active, 1 inactive" {
		t.Errorf("endpoints %+v", v.Endpoints)
	}
}

// The model moved on, or someone changed IPVS: each difference is named.
func TestExplainMismatches(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), true)
	ex := NewExplainerFor(e.k, "wlc")
	vs := key("10.96.0.10", 80, model.TCP)

	wantMismatch(t, explainPort(t, ex, wantOf(ex, withAffinity(webHTTP, time.Minute))),
		"the virtual server's scheduler is rr, not wlc as configured",
		"the virtual server should be persistent for 60s (ClientIP affinity)")
	wantMismatch(t, explainPort(t, ex, wantOf(ex, withEndpoints(sticky, "10.0.3.1:8443", "10.0.3.2:8443"))),
		"endpoint 10.0.3.2:8443 is wanted, but the virtual server has no such real server")
	wantMismatch(t, explainPort(t, ex, wantOf(ex, withAffinity(sticky, 0))),
		"the virtual server is persistent for 10800s, but the service has no ClientIP affinity")
	wantMismatch(t, explainPort(t, ex, wantOf(ex, withEndpoints(webHTTP, "10.0.1.1:8080"))),
		"IPVS sends connections to 10.0.1.2:8080 at weight 1, which the model does not want")
	wantMismatch(t, explainPort(t, ex, wantOf(ex, withEndpoints(webHTTP))),
		"a virtual server for 10.96.0.10:80/TCP is still there, although it has no endpoints")
	wantMismatch(t, explainPort(t, ex, wantOf(ex, svc("alpha", "default", "new", "", model.TCP, "10.96.0.30", 81, "10.0.9.1:80"))),
		"IPVS has no virtual server for 10.96.0.30:81/TCP")

	must(t, e.k.UpdateDest(Service{ServiceKey: vs, Scheduler: "rr"}, Destination{Addr: ap("10.0.1.1:8080"), Weight: 5}))
	must(t, e.k.DelAddr(vs.VIP))
	wantMismatch(t, explainPort(t, ex, wantOf(ex, webHTTP)),
		"real server 10.0.1.1:8080 has weight 5, not 1",
		"10.96.0.10:80 is not bound to outpost0: the kernel never hands its packets to IPVS")

	// A virtual server the model does not have (Want.Key nil).
	v := explainPort(t, ex, proxy.Want{Target: ap("10.96.0.10:80"), Protocol: model.TCP})
	wantMismatch(t, v, "IPVS still has a virtual server for 10.96.0.10:80/TCP, but the model has no such service port")
	if len(v.Mismatches) != 1 || v.Empty {
		t.Errorf("not in the model: empty %v, mismatches %q", v.Empty, v.Mismatches)
	}
	if v := explainPort(t, ex, proxy.Want{Target: ap("10.96.0.99:80"), Protocol: model.TCP}); !v.Empty || len(v.Mismatches) != 0 {
		t.Errorf("unused address: empty %v, mismatches %q", v.Empty, v.Mismatches)
	}
}

func TestExplainError(t *testing.T) {
	k := NewFakeKernel()
	boom := errors.New("netlink: boom")
	k.FailNext("List", boom)
	ex := NewExplainerFor(k, "rr")
	if _, err := ex.ExplainPort(t.Context(), wantOf(ex, webHTTP)); !errors.Is(err, boom) {
		t.Errorf("List failing: %v", err)
	}
}
