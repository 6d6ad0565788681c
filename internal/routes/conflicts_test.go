package routes

import (
	"bytes"
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

func owned(dst, via, owner string) Route { r := route(dst, via); r.Owner = owner; return r }

// refusedFor maps each refused route's owner and route to its reason.
func refusedFor(in *Installer) map[string]string {
	out := map[string]string{}
	for _, r := range in.Refused() {
		out[r.Route.Owner+" "+r.Route.String()] = r.Reason
	}
	return out
}

// TestSyncConflicts: when desired routes disagree about one destination, the
// route in place keeps it and the newcomer is refused; with none in place,
// the order of desired decides. Never both refused.
func TestSyncConflicts(t *testing.T) {
	ctx := context.Background()
	k := NewFake(hostLocal, hostRoutes()...)
	var logs bytes.Buffer
	in := New(Options{Kernel: k, Log: slog.New(slog.NewTextHandler(&logs, nil))})

	honest := owned("10.245.1.0/24", "10.250.0.221", `node n1 of cluster "a"`)
	other := owned("10.245.2.0/24", "10.250.0.222", `node n2 of cluster "a"`)
	if err := in.Sync(ctx, []Route{honest, other}, nil); err != nil {
		t.Fatal(err)
	}
	k.Ops()

	// A newcomer copies n1's pod CIDR, listed first (a node name that
	// sorts first, or a cluster earlier in the configuration): n1 keeps
	// it.
	copier := owned("10.245.1.0/24", "10.250.0.231", `node a-copy of cluster "a"`)
	if err := in.Sync(ctx, []Route{copier, honest, other}, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); len(ops) != 0 {
		t.Errorf("a newcomer changed the table: %q", ops)
	}
	want := map[string]string{
		copier.Owner + " " + copier.String(): `10.245.1.0/24 is also wanted via 10.250.0.221 by node n1 of cluster "a", which has precedence`,
	}
	if got := refusedFor(in); len(got) != 1 || !strings.HasPrefix(got[copier.Owner+" "+copier.String()], want[copier.Owner+" "+copier.String()]) {
		t.Errorf("refused %v, want only the copier", got)
	}
	if n := strings.Count(logs.String(), "route not installed"); n != 1 || !strings.Contains(logs.String(), "a-copy") {
		t.Errorf("log:\n%s\nwant one warning naming the copier", &logs)
	}
	// A standing conflict is logged once.
	logs.Reset()
	if err := in.Sync(ctx, []Route{copier, honest, other}, nil); err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Errorf("an unchanged conflict logged again:\n%s", &logs)
	}

	// n1 moves to another address: it still holds its destination,
	// although the copier comes first and neither gateway is the one in
	// the kernel.
	moved := owned("10.245.1.0/24", "10.250.0.241", honest.Owner)
	if err := in.Sync(ctx, []Route{copier, moved, other}, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, []string{"replace 10.245.1.0/24 via 10.250.0.241 proto 95 metric 2048"}) {
		t.Errorf("n1 moved: %q", ops)
	}

	// A restart forgets who held what: the route in the kernel decides.
	in = New(Options{Kernel: k})
	if err := in.Sync(ctx, []Route{copier, moved, other}, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); len(ops) != 0 {
		t.Errorf("after a restart the newcomer took the route: %q", ops)
	}
	if got := refusedFor(in); len(got) != 1 || got[copier.Owner+" "+copier.String()] == "" {
		t.Errorf("refused after a restart: %v", got)
	}

	// n1 goes: the destination is free, the copier gets it.
	if err := in.Sync(ctx, []Route{copier, other}, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, []string{"replace 10.245.1.0/24 via 10.250.0.231 proto 95 metric 2048"}) {
		t.Errorf("n1 gone: %q", ops)
	}
	if len(in.Refused()) != 0 {
		t.Errorf("refused %v", in.Refused())
	}
}

// TestSyncConflictOrder: with nothing in place, the first of desired wins
// (the daemon lists clusters in configuration order, then nodes by name);
// owners that agree share one route, and none of them is refused.
func TestSyncConflictOrder(t *testing.T) {
	ctx := context.Background()
	k := NewFake(hostLocal, hostRoutes()...)
	in := New(Options{Kernel: k})
	first := owned("10.245.3.0/24", "10.250.0.223", `node z of cluster "a"`)
	second := owned("10.245.3.0/24", "10.250.0.233", `node a of cluster "b"`)
	same := owned("10.245.3.0/24", "10.250.0.223", `node y of cluster "b"`)
	if err := in.Sync(ctx, []Route{first, second, same}, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, []string{"add 10.245.3.0/24 via 10.250.0.223 proto 95 metric 2048"}) {
		t.Errorf("ops %q", ops)
	}
	got := refusedFor(in)
	if len(got) != 1 || !strings.Contains(got[second.Owner+" "+second.String()], `by node z of cluster "a", which has precedence`) {
		t.Errorf("refused %v, want the second only", got)
	}
	// The agreeing owner holds the route too: once the first goes, it
	// keeps it against the other.
	if err := in.Sync(ctx, []Route{second, same}, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); len(ops) != 0 {
		t.Errorf("ops %q, want the route kept for its other owner", ops)
	}
	if got := refusedFor(in); len(got) != 1 || got[second.Owner+" "+second.String()] == "" {
		t.Errorf("refused %v", got)
	}
}

// TestSyncProtected: no route may cover the host's resolvers, gateways or an
// apiserver, even off-link ones that no connected network covers; routes
// beside them are installed.
func TestSyncProtected(t *testing.T) {
	ctx := context.Background()
	k := NewFake(hostLocal, hostRoutes()...)
	in := New(Options{Kernel: k})
	protected := []Protected{
		{addr("8.8.8.8"), "a resolver of this host"},
		{addr("172.31.255.1"), "a default gateway of this host"},
		{addr("10.245.200.10"), `the apiserver of cluster "b"`},
		{addr("fd00:53::53"), "a resolver of this host"},
	}
	err := in.Sync(ctx, []Route{
		owned("8.8.8.0/24", "10.250.0.221", "rogue"),
		owned("8.8.8.8/32", "10.250.0.221", "rogue"),
		owned("172.31.0.0/16", "10.250.0.221", "rogue"),
		owned("10.245.200.0/24", "10.250.0.222", "rogue"),
		owned("fd00:53::/64", "fd00:250::221", "rogue"),
		owned("10.245.201.0/24", "10.250.0.222", "honest"),
		owned("8.8.4.0/24", "10.250.0.223", "honest"), // beside a resolver: not ours to judge here
	}, protected)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add 8.8.4.0/24 via 10.250.0.223 proto 95 metric 2048",
		"add 10.245.201.0/24 via 10.250.0.222 proto 95 metric 2048",
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, want) {
		t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
	wantRefused := map[string]string{
		"rogue 8.8.8.0/24 via 10.250.0.221":      "8.8.8.0/24 covers 8.8.8.8, a resolver of this host: a route there would take this host's own traffic",
		"rogue 8.8.8.8/32 via 10.250.0.221":      "covers 8.8.8.8, a resolver of this host",
		"rogue 172.31.0.0/16 via 10.250.0.221":   "covers 172.31.255.1, a default gateway of this host",
		"rogue 10.245.200.0/24 via 10.250.0.222": `covers 10.245.200.10, the apiserver of cluster "b"`,
		"rogue fd00:53::/64 via fd00:250::221":   "covers fd00:53::53, a resolver of this host",
	}
	got := refusedFor(in)
	if len(got) != len(wantRefused) {
		t.Errorf("refused %v", got)
	}
	for k, w := range wantRefused {
		if !strings.Contains(got[k], w) {
			t.Errorf("%s: reason %q, want %q", k, got[k], w)
		}
	}
}
