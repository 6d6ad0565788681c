package iptables

import (
	"reflect"
	"testing"
)

// TestCanary: the canaries say nothing before the first sync, nothing
// while they stand, and name what a flush took, emptied or deleted; the
// full sync the daemon then runs puts them back.
func TestCanary(t *testing.T) {
	f := NewFake()
	p := newProxier(f, false, testMark)
	missing := func() []string {
		t.Helper()
		m, err := p.Missing(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := missing(); m != nil {
		t.Fatalf("before the first sync: %q", m)
	}
	mustSync(t, p, testState(), true)
	if m := missing(); m != nil {
		t.Fatalf("after a sync: %q", m)
	}
	// iptables -t nat -F: every chain emptied, none deleted.
	mustRestore(t, f, "*nat\n-F OUTPOST-CANARY\n-F OUTPOST-SERVICES\n-F OUTPUT\nCOMMIT\n")
	if m, want := missing(), []string{"nat table: the rules of OUTPOST-CANARY"}; !reflect.DeepEqual(m, want) {
		t.Errorf("after a flush of nat: %q, want %q", m, want)
	}
	// A firewall reload that deletes the chains too.
	mustRestore(t, f, "*filter\n-F OUTPOST-CANARY\n-X OUTPOST-CANARY\nCOMMIT\n")
	if m, want := missing(), []string{"nat table: the rules of OUTPOST-CANARY", "filter table: chain OUTPOST-CANARY"}; !reflect.DeepEqual(m, want) {
		t.Errorf("after the filter canary was deleted: %q, want %q", m, want)
	}
	mustSync(t, p, testState(), true)
	if m := missing(); m != nil {
		t.Fatalf("after the repairing full sync: %q", m)
	}
	checkAllFlows(t, f, testState(), false, true)
	if err := p.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m := missing(); m != nil {
		t.Errorf("after Cleanup, which removes the canaries too: %q", m)
	}
}
