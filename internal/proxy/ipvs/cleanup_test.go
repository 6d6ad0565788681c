package ipvs

import (
	"errors"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// foreignRules are someone else's, including a chain whose name starts
// like the iptables backend's (not ours either).
const foreignRules = `*filter
:FOREIGN - [0:0]
-A FOREIGN -p tcp --dport 22 -j ACCEPT
-A INPUT -j FOREIGN
COMMIT
*nat
:OUTPOST-SERVICES - [0:0]
-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE
-A OUTPUT -j OUTPOST-SERVICES
COMMIT
`

func TestCleanup(t *testing.T) {
	e := newEnv(t)
	must(t, e.ipt.Restore(t.Context(), []byte(foreignRules)))
	must(t, e.ips.Restore(t.Context(), []byte("create FOREIGN hash:ip\nadd FOREIGN 10.1.1.1\n")))
	iptBefore, ipsBefore := e.ipt.Dump(), e.ips.Dump()

	e.sync(testState(), false)
	// A foreign virtual server, also in our service CIDR, and one on our
	// other family.
	must(t, e.k.AddService(Service{ServiceKey: key("192.168.1.1", 80, model.TCP), Scheduler: "rr"}))
	must(t, e.k.AddService(Service{ServiceKey: key("10.96.0.99", 80, model.TCP), Scheduler: "rr"}))
	e.k.TakeOps()

	must(t, e.p.Cleanup(t.Context()))
	e.wantDump("service 10.96.0.99:80/TCP rr\nservice 192.168.1.1:80/TCP rr\n")
	if got := e.ipt.Dump(); got != iptBefore {
		t.Errorf("iptables after Cleanup:\n%s\nwant:\n%s", got, iptBefore)
	}
	if got := e.ips.Dump(); got != ipsBefore {
		t.Errorf("ipsets after Cleanup:\n%s\nwant:\n%s", got, ipsBefore)
	}

	// Nothing left: a second Cleanup changes nothing.
	e.k.TakeOps()
	n := e.ipt.Restores
	must(t, e.p.Cleanup(t.Context()))
	e.wantOps()
	if e.ipt.Restores != n {
		t.Errorf("second Cleanup restored iptables")
	}

	// And the Proxier starts over.
	e.sync(testState(), false)
	if !strings.Contains(e.k.Dump(), testStateDump[:40]) || len(e.ipt.Rules("filter", chainFilter)) != 3 {
		t.Errorf("sync after Cleanup:\n%s\n%s", e.k.Dump(), e.ipt.Dump())
	}
}

func TestCleanupWithoutIPVS(t *testing.T) {
	// ip_vs not loaded and not loadable, no outpost0: Cleanup succeeds
	// and never loads the module.
	e := newEnv(t)
	e.k.ModuleAvailable = false
	must(t, e.p.Cleanup(t.Context()))
	e.wantOps()

	e.k.ModuleAvailable = true
	must(t, e.p.Cleanup(t.Context()))
	e.wantOps() // no load-module
}

func TestCleanupKeepsOtherFamily(t *testing.T) {
	e := newEnv(t)
	v6 := New(Options{Kernel: e.k, IPTables: e.ipt, IPSet: e.ips, IPv6: true, Clock: e.clk})
	must(t, v6.Sync(t.Context(), testState(), false))
	e.sync(testState(), false)
	e.k.TakeOps()

	// The IPv4 Cleanup leaves outpost0 to the IPv6 addresses on it.
	must(t, e.p.Cleanup(t.Context()))
	if got := e.k.Dump(); strings.Contains(got, "10.9") || !strings.Contains(got, "addr fd00:96::10") || !strings.Contains(got, "service [fd00:96::10]:80/TCP") {
		t.Errorf("after the IPv4 Cleanup:\n%s", got)
	}
	if e.ips.Members("OUTPOST-IPVS-VIPS6") == nil || e.ips.Members("OUTPOST-IPVS-VIPS") != nil {
		t.Errorf("ipsets after the IPv4 Cleanup:\n%s", e.ips.Dump())
	}
	must(t, v6.Cleanup(t.Context()))
	e.wantDump("")
	if names, _ := e.ips.List(t.Context()); len(names) != 0 {
		t.Errorf("ipsets left: %q", names)
	}
}

func TestCleanupFailureKeepsOwnership(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	boom := errors.New("boom")
	e.k.FailNext("DelService", boom)
	if err := e.p.Cleanup(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Cleanup: %v", err)
	}
	// The virtual server that could not be deleted keeps its VIP on
	// outpost0, so that it is still ours the next time.
	if got := e.k.Dump(); !strings.Contains(got, "interface outpost0") || !strings.Contains(got, "addr 10.96.0.10\n") {
		t.Errorf("after a failed Cleanup:\n%s", got)
	}
	must(t, e.p.Cleanup(t.Context()))
	e.wantDump("")
}

func TestCleanupWithStaleTempSet(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	// An interrupted sync left a temporary set.
	must(t, e.ips.Restore(t.Context(), []byte("create OUTPOST-IPVS-PORTS-TMP hash:ip,port family inet\n")))
	must(t, e.p.Cleanup(t.Context()))
	if names, _ := e.ips.List(t.Context()); len(names) != 0 {
		t.Errorf("ipsets left: %q", names)
	}
}
