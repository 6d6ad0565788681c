package ipvs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// The state builders are shared with the other backend's tests.
var (
	svc           = modeltest.Svc
	withEndpoints = modeltest.WithEndpoints
	withAffinity  = modeltest.WithAffinity
	cluster       = modeltest.Cluster
	state         = modeltest.State
)

var (
	alphaCIDRs = []string{"10.96.0.0/16", "fd00:96::/112"}
	betaCIDRs  = []string{"10.97.0.0/16", "fd00:97::/112"}
)

// Service ports of testState, to derive changed states from.
var (
	webHTTP    = svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080", "10.0.1.2:8080")
	webMetrics = svc("alpha", "default", "web", "metrics", model.TCP, "10.96.0.10", 9090, "10.0.1.1:9090")
	dnsUDP     = svc("alpha", "kube-system", "dns", "dns", model.UDP, "10.96.0.53", 53, "10.0.2.1:53", "10.0.2.2:53")
	dnsTCP     = svc("alpha", "kube-system", "dns", "dns-tcp", model.TCP, "10.96.0.53", 53, "10.0.2.1:53", "10.0.2.2:53")
	sticky     = withAffinity(svc("alpha", "default", "sticky", "", model.TCP, "10.96.0.20", 443, "10.0.3.1:8443"), 3*time.Hour)
	sig        = svc("alpha", "default", "sig", "", model.SCTP, "10.96.0.40", 3868, "10.0.4.1:3868")
	empty      = svc("alpha", "default", "empty", "", model.TCP, "10.96.0.30", 80)
	web6       = svc("alpha", "default", "web", "http", model.TCP, "fd00:96::10", 80, "[fd00:1::1]:8080")
	betaAPI    = svc("beta", "default", "api", "https", model.TCP, "10.97.0.10", 443, "10.1.0.1:6443", "10.1.0.2:6443")
)

// testState has services of every protocol, several ports on one ClusterIP,
// the same port with two protocols, ClientIP affinity, a service without
// endpoints, an IPv6 port an IPv4 Proxier must ignore, and two clusters.
func testState(alphaPorts ...*model.ServicePort) *model.State {
	if alphaPorts == nil {
		alphaPorts = []*model.ServicePort{webHTTP, webMetrics, dnsUDP, dnsTCP, sticky, sig, empty, web6}
	}
	return state(
		cluster("alpha", true, alphaCIDRs, alphaPorts...),
		cluster("beta", true, betaCIDRs, betaAPI),
	)
}

const testStateDump = `interface outpost0
  addr 10.96.0.10
  addr 10.96.0.20
  addr 10.96.0.30
  addr 10.96.0.40
  addr 10.96.0.53
  addr 10.97.0.10
service 10.96.0.10:80/TCP rr
  -> 10.0.1.1:8080 weight 1 active 0 inactive 0
  -> 10.0.1.2:8080 weight 1 active 0 inactive 0
service 10.96.0.10:9090/TCP rr
  -> 10.0.1.1:9090 weight 1 active 0 inactive 0
service 10.96.0.20:443/TCP rr persistent 10800
  -> 10.0.3.1:8443 weight 1 active 0 inactive 0
service 10.96.0.40:3868/SCTP rr
  -> 10.0.4.1:3868 weight 1 active 0 inactive 0
service 10.96.0.53:53/TCP rr
  -> 10.0.2.1:53 weight 1 active 0 inactive 0
  -> 10.0.2.2:53 weight 1 active 0 inactive 0
service 10.96.0.53:53/UDP rr
  -> 10.0.2.1:53 weight 1 active 0 inactive 0
  -> 10.0.2.2:53 weight 1 active 0 inactive 0
service 10.97.0.10:443/TCP rr
  -> 10.1.0.1:6443 weight 1 active 0 inactive 0
  -> 10.1.0.2:6443 weight 1 active 0 inactive 0
`

// env is a Proxier over fakes of every layer below it.
type env struct {
	t       *testing.T
	k       *FakeKernel
	ipt     *iptables.Fake
	ips     *FakeIPSet
	clk     *clocktesting.FakeClock
	opt     Options
	p       *Proxier
	resyncs int
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newEnv(t *testing.T) *env {
	e := &env{t: t, k: NewFakeKernel(), ipt: iptables.NewFake(), ips: NewFakeIPSet(), clk: clocktesting.NewFakeClock(t0)}
	// The kernel refuses to destroy a set that a rule names.
	e.ips.InUse = func(name string) bool { return strings.Contains(e.ipt.Dump(), "--match-set "+name+" ") }
	e.opt = Options{Kernel: e.k, IPTables: e.ipt, IPSet: e.ips, Clock: e.clk, Resync: func() { e.resyncs++ }}
	e.p = New(e.opt)
	return e
}

// restart replaces the Proxier by a new one over the same kernel, as a
// restarted daemon.
func (e *env) restart() { e.p = New(e.opt) }

func (e *env) sync(st *model.State, full bool) {
	e.t.Helper()
	if err := e.p.Sync(e.t.Context(), st, full); err != nil {
		e.t.Fatalf("Sync(full=%v): %v", full, err)
	}
}

// wantOps checks the kernel operations since the last check.
func (e *env) wantOps(want ...string) {
	e.t.Helper()
	got := e.k.TakeOps()
	if !slices.Equal(got, want) {
		e.t.Errorf("kernel operations:\n  got  %q\n  want %q", got, want)
	}
}

func (e *env) wantDump(want string) {
	e.t.Helper()
	if got := e.k.Dump(); got != want {
		e.t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
	}
}

func (e *env) wantSet(name string, want ...string) {
	e.t.Helper()
	got := e.ips.Members(name)
	if want == nil {
		want = []string{}
	}
	if got == nil || !slices.Equal(got, want) {
		e.t.Errorf("ipset %s: got %q, want %q", name, got, want)
	}
}

func key(vip string, port uint16, p model.Protocol) ServiceKey {
	return ServiceKey{VIP: netip.MustParseAddr(vip), Port: port, Protocol: p}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
