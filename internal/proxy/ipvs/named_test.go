package ipvs

import (
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestNamedServicesProgramNothing: headless and ExternalName services are
// the DNS server's; no virtual server, address or set member comes of
// them.
func TestNamedServicesProgramNothing(t *testing.T) {
	e := newEnv(t)
	e.sync(modeltest.WithNames(testState()), true)
	e.sync(modeltest.WithNames(testState()), false)
	e.wantDump(testStateDump)
	plain := newEnv(t)
	plain.sync(testState(), true)
	if got, want := e.ipt.Dump(), plain.ipt.Dump(); got != want {
		t.Errorf("iptables rules changed with named services:\n%s\nwithout them:\n%s", got, want)
	}
	if got, want := e.ips.Dump(), plain.ips.Dump(); got != want {
		t.Errorf("ipsets changed with named services:\n%s\nwithout them:\n%s", got, want)
	}
}
