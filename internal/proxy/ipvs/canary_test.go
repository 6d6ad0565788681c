package ipvs

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestCanary: nothing is missing before the first sync or while all
// stands; a flushed filter table, a deleted nat chain and a VIP taken off
// outpost0 are named; a full sync repairs them.
func TestCanary(t *testing.T) {
	e := newEnv(t)
	missing := func() []string {
		t.Helper()
		m, err := e.p.Missing(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := missing(); m != nil {
		t.Fatalf("before the first sync: %q", m)
	}
	e.sync(testState(), false)
	if m := missing(); m != nil {
		t.Fatalf("after a sync: %q", m)
	}
	if err := e.ipt.Restore(t.Context(), []byte("*filter\n-F OUTPOST-IPVS-FILTER\n-F INPUT\nCOMMIT\n*nat\n-F POSTROUTING\n-F OUTPOST-IPVS-POSTROUTING\n-X OUTPOST-IPVS-POSTROUTING\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	if err := e.k.DelAddr(netip.MustParseAddr("10.96.0.20")); err != nil {
		t.Fatal(err)
	}
	want := []string{"filter table: the rules of OUTPOST-IPVS-FILTER", "nat table: chain OUTPOST-IPVS-POSTROUTING", "ClusterIP 10.96.0.20 on outpost0"}
	if m := missing(); !reflect.DeepEqual(m, want) {
		t.Errorf("after a flush and a removed address:\n got %q\nwant %q", m, want)
	}
	e.sync(testState(), true)
	if m := missing(); m != nil {
		t.Fatalf("after the repairing full sync: %q", m)
	}
	e.wantDump(testStateDump)
	if err := e.p.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m := missing(); m != nil {
		t.Errorf("after Cleanup: %q", m)
	}
}
