package iptables

import (
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestNamedServicesProgramNothing: headless and ExternalName services are
// the DNS server's; the rules are the same with them as without, and a
// packet to a headless endpoint's address goes through untouched.
func TestNamedServicesProgramNothing(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		plain, named := NewFake(), NewFake()
		mustSync(t, newProxier(plain, v6, testMark), testState(), true)
		p := newProxier(named, v6, testMark)
		mustSync(t, p, modeltest.WithNames(testState()), true)
		mustSync(t, p, modeltest.WithNames(testState()), false)
		if plain.Dump() != named.Dump() {
			t.Errorf("v6=%v: the rules changed with named services:\n%s\nwithout them:\n%s", v6, named.Dump(), plain.Dump())
		}
		dst := "10.96.0.101"
		if v6 {
			dst = "fd00:96::65"
		}
		runFlows(t, named, []flowCase{{"a headless endpoint's address", tcp(dst, 80), untouched}})
	}
}
