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
	if m, want := missing(), []string{"nat table: the rules of OUTPOST-CANARY", "nat table: the jump from OUTPUT to OUTPOST-SERVICES"}; !reflect.DeepEqual(m, want) {
		t.Errorf("after a flush of nat: %q, want %q", m, want)
	}
	// A firewall reload that deletes the chains too.
	mustRestore(t, f, "*filter\n-F OUTPOST-CANARY\n-X OUTPOST-CANARY\nCOMMIT\n")
	if m, want := missing(), []string{"nat table: the rules of OUTPOST-CANARY", "filter table: chain OUTPOST-CANARY",
		"nat table: the jump from OUTPUT to OUTPOST-SERVICES"}; !reflect.DeepEqual(m, want) {
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

// TestCanaryFlushDuringRepair: a table flushed while a full sync runs,
// after it listed the hooks and before its restore, leaves our chains and
// the canary rewritten and nothing jumping to them: Missing names the
// jumps, and the next full sync puts them back.
func TestCanaryFlushDuringRepair(t *testing.T) {
	f := NewFake()
	p := newProxier(f, false, testMark)
	mustSync(t, p, testState(), true)
	flushed := false
	f.AfterSave = func(table string) {
		if table == "nat" && !flushed {
			flushed = true
			if err := f.Flush(t.Context(), table, chainPrefix); err != nil {
				t.Error(err)
			}
		}
	}
	mustSync(t, p, testState(), true)
	f.AfterSave = nil
	if !flushed {
		t.Fatal("the full sync did not list the nat table")
	}
	m, err := p.Missing(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nat table: the jump from OUTPUT to OUTPOST-SERVICES", "nat table: the jump from PREROUTING to OUTPOST-PREROUTING",
		"nat table: the jump from POSTROUTING to OUTPOST-POSTROUTING"}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("after a flush during the full sync: %q, want %q", m, want)
	}
	mustSync(t, p, testState(), true)
	if m, err := p.Missing(t.Context()); err != nil || m != nil {
		t.Fatalf("after the repairing full sync: %q, %v", m, err)
	}
	checkAllFlows(t, f, testState(), false, true)
}
