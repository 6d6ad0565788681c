package routes

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func route(dst, via string) Route { return Route{Dst: pfx(dst), Via: addr(via)} }

// foreignRoute is a route someone else made.
func foreignRoute(dst, via string, proto, metric int) KernelRoute {
	r := KernelRoute{Dst: pfx(dst), Protocol: proto, Metric: metric}
	if via != "" {
		r.Via = addr(via)
	}
	return r
}

// hostLocal is the lab host: 10.250.0.2/24 and fd00:250::2/64 on its link,
// loopback.
var hostLocal = []netip.Prefix{pfx("10.250.0.2/24"), pfx("127.0.0.1/8"), pfx("fd00:250::2/64"), pfx("::1/128"), pfx("fe80::1/64")}

// hostRoutes are the routes such a host has before we come: its connected
// networks, a default route, and two more that the tests aim at.
func hostRoutes() []KernelRoute {
	return []KernelRoute{
		foreignRoute("0.0.0.0/0", "10.250.0.1", 3, 0),
		foreignRoute("10.250.0.0/24", "", 2, 0),
		foreignRoute("fd00:250::/64", "", 2, 256),
		// An administrator's route to exactly a pod CIDR of a node.
		foreignRoute("10.245.9.0/24", "10.250.0.9", 4, 0),
		// A more specific route inside a pod CIDR we route: it must
		// stay, and keep winning.
		foreignRoute("10.245.1.128/25", "10.250.0.50", 4, 0),
	}
}

const hostDump = `0.0.0.0/0 via 10.250.0.1 proto 3 metric 0
10.245.1.128/25 via 10.250.0.50 proto 4 metric 0
10.245.9.0/24 via 10.250.0.9 proto 4 metric 0
10.250.0.0/24 proto 2 metric 0
fd00:250::/64 proto 2 metric 256
`

func TestSync(t *testing.T) {
	ctx := context.Background()
	k := NewFake(hostLocal, hostRoutes()...)
	var logs bytes.Buffer
	in := New(Options{Kernel: k, Log: slog.New(slog.NewTextHandler(&logs, nil))})

	desired := []Route{
		route("10.245.1.0/24", "10.250.0.221"),
		route("10.245.2.0/24", "10.250.0.222"),
		route("fd00:245:1::/64", "fd00:250::221"),
		route("10.245.2.0/24", "10.250.0.222"), // twice, the same: fine
		// Refused:
		route("10.245.9.0/24", "10.250.0.229"),   // someone else's destination
		route("10.250.0.0/16", "10.250.0.1"),     // covers the connected network
		route("10.250.0.128/25", "10.250.0.1"),   // inside it
		route("127.1.0.0/16", "10.250.0.1"),      // loopback
		route("10.245.3.0/24", "10.99.0.1"),      // gateway not on a connected network
		route("10.245.4.0/24", "10.250.0.224"),   // two gateways for one pod CIDR: the first wins
		route("10.245.4.0/24", "10.250.0.225"),   // refused
		route("10.245.5.1/24", "10.250.0.225"),   // not a network address
		route("10.245.6.0/24", "10.250.0.2"),     // via this host itself
		route("10.245.10.0/24", "fd00:250::221"), // mixed families
		route("fe80::/64", "fe80::2"),            // link-local
	}
	if err := in.Sync(ctx, desired, nil); err != nil {
		t.Fatal(err)
	}
	want := `0.0.0.0/0 via 10.250.0.1 proto 3 metric 0
10.245.1.0/24 via 10.250.0.221 proto 95 metric 2048
10.245.1.128/25 via 10.250.0.50 proto 4 metric 0
10.245.2.0/24 via 10.250.0.222 proto 95 metric 2048
10.245.4.0/24 via 10.250.0.224 proto 95 metric 2048
10.245.9.0/24 via 10.250.0.9 proto 4 metric 0
10.250.0.0/24 proto 2 metric 0
fd00:245:1::/64 via fd00:250::221 proto 95 metric 2048
fd00:250::/64 proto 2 metric 256
`
	if got := k.Dump(); got != want {
		t.Errorf("table after the first sync:\n%s\nwant:\n%s", got, want)
	}
	wantRefused := map[string]string{
		"10.245.9.0/24 via 10.250.0.229":   "already has a route to 10.245.9.0/24 that is not ours (10.245.9.0/24 via 10.250.0.9 proto 4 metric 0)",
		"10.250.0.0/16 via 10.250.0.1":     "overlaps this host's own address or directly connected network 10.250.0.2/24",
		"10.250.0.128/25 via 10.250.0.1":   "overlaps this host's own address or directly connected network 10.250.0.2/24",
		"127.1.0.0/16 via 10.250.0.1":      "overlaps loopback",
		"10.245.3.0/24 via 10.99.0.1":      "the gateway 10.99.0.1 is on none of this host's directly connected networks",
		"10.245.4.0/24 via 10.250.0.225":   "10.245.4.0/24 is also wanted via 10.250.0.224 by another route, which has precedence",
		"10.245.5.1/24 via 10.250.0.225":   "not a network address (did you mean 10.245.5.0/24?)",
		"10.245.6.0/24 via 10.250.0.2":     "is this host's own address",
		"10.245.10.0/24 via fd00:250::221": "different IP families",
		"fe80::/64 via fe80::2":            "overlaps link-local addresses",
	}
	refused := in.Refused()
	if len(refused) != len(wantRefused) {
		t.Errorf("%d refused, want %d: %v", len(refused), len(wantRefused), refused)
	}
	for _, r := range refused {
		if w, ok := wantRefused[r.Route.String()]; !ok || !strings.Contains(r.Reason, w) {
			t.Errorf("refused %v, want a reason with %q", r, w)
		}
	}
	if n := strings.Count(logs.String(), "route not installed"); n != len(wantRefused) {
		t.Errorf("%d refusals logged, want %d", n, len(wantRefused))
	}
	k.Ops()

	// The same again: nothing to do, and nothing logged again.
	logs.Reset()
	if err := in.Sync(ctx, desired, nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); len(ops) != 0 {
		t.Errorf("an unchanged sync changed the table: %q", ops)
	}
	if logs.Len() != 0 {
		t.Errorf("an unchanged sync logged:\n%s", &logs)
	}

	// A change: one gateway moves, one node comes, the IPv6 one goes. The
	// route that stays is not touched: no delete and re-add.
	if err := in.Sync(ctx, []Route{
		route("10.245.1.0/24", "10.250.0.221"),
		route("10.245.2.0/24", "10.250.0.232"),
		route("10.245.7.0/24", "10.250.0.227"),
	}, nil); err != nil {
		t.Fatal(err)
	}
	wantOps := []string{
		"replace 10.245.2.0/24 via 10.250.0.232 proto 95 metric 2048",
		"add 10.245.7.0/24 via 10.250.0.227 proto 95 metric 2048",
		"delete 10.245.4.0/24 via 10.250.0.224 proto 95 metric 2048",
		"delete fd00:245:1::/64 via fd00:250::221 proto 95 metric 2048",
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, wantOps) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(wantOps, "\n"))
	}
	if len(in.Refused()) != 0 {
		t.Errorf("refusals of an earlier sync remain: %v", in.Refused())
	}

	// An administrator adds a route to one of our destinations: it wins,
	// ours is withdrawn and the conflict reported.
	if err := k.Add(foreignRoute("10.245.1.0/24", "10.250.0.99", 4, 0)); err != nil {
		t.Fatal(err)
	}
	k.Ops()
	if err := in.Sync(ctx, []Route{route("10.245.1.0/24", "10.250.0.221"), route("10.245.7.0/24", "10.250.0.227")}, nil); err != nil {
		t.Fatal(err)
	}
	wantOps = []string{
		"delete 10.245.1.0/24 via 10.250.0.221 proto 95 metric 2048",
		"delete 10.245.2.0/24 via 10.250.0.232 proto 95 metric 2048",
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, wantOps) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(wantOps, "\n"))
	}
	if r := in.Refused(); len(r) != 1 || !strings.Contains(r[0].Reason, "not ours (10.245.1.0/24 via 10.250.0.99 proto 4") {
		t.Errorf("refused %v", r)
	}

	// Cleanup takes ours and leaves everything else as it was.
	if err := in.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, []string{"delete 10.245.7.0/24 via 10.250.0.227 proto 95 metric 2048"}) {
		t.Errorf("cleanup: %q", ops)
	}
	if got, want := k.Dump(), hostDump[:strings.Index(hostDump, "10.245.9.0")]+
		"10.245.1.0/24 via 10.250.0.99 proto 4 metric 0\n"+hostDump[strings.Index(hostDump, "10.245.9.0"):]; got != sortedDump(want) {
		t.Errorf("after cleanup:\n%s\nwant:\n%s", got, sortedDump(want))
	}
}

// sortedDump sorts a dump written by hand the way Dump sorts it.
func sortedDump(s string) string {
	k := NewFake(nil)
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		r := KernelRoute{Dst: pfx(f[0])}
		for i := 1; i+1 < len(f); i += 2 {
			switch f[i] {
			case "via":
				r.Via = addr(f[i+1])
			case "proto":
				r.Protocol = atoi(f[i+1])
			case "metric":
				r.Metric = atoi(f[i+1])
			}
		}
		k.routes = append(k.routes, r)
	}
	return k.Dump()
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestSyncOwnLeftovers: routes of ours the desired state does not explain
// (another metric from an older version, a multipath route, a node that is
// gone) are replaced or removed; foreign ones of the same shape are not.
func TestSyncOwnLeftovers(t *testing.T) {
	k := NewFake(hostLocal, append(hostRoutes(),
		KernelRoute{Dst: pfx("10.245.1.0/24"), Via: addr("10.250.0.221"), Protocol: Protocol, Metric: 100},
		KernelRoute{Dst: pfx("10.245.2.0/24"), Multipath: true, Protocol: Protocol, Metric: Metric},
		KernelRoute{Dst: pfx("10.245.8.0/24"), Via: addr("10.250.0.228"), Protocol: Protocol, Metric: Metric},
		KernelRoute{Dst: pfx("10.245.8.0/24"), Via: addr("10.250.0.228"), Protocol: 4, Metric: 10},
	)...)
	in := New(Options{Kernel: k})
	if err := in.Sync(context.Background(), []Route{route("10.245.1.0/24", "10.250.0.221"), route("10.245.2.0/24", "10.250.0.222")}, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add 10.245.1.0/24 via 10.250.0.221 proto 95 metric 2048",
		"replace 10.245.2.0/24 via 10.250.0.222 proto 95 metric 2048",
		"delete 10.245.1.0/24 via 10.250.0.221 proto 95 metric 100",
		"delete 10.245.8.0/24 via 10.250.0.228 proto 95 metric 2048",
	}
	if ops := k.Ops(); !reflect.DeepEqual(ops, want) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
	// The foreign route to 10.245.8.0/24 is there, and ours was refused
	// nothing: it was not wanted.
	if !strings.Contains(k.Dump(), "10.245.8.0/24 via 10.250.0.228 proto 4 metric 10") {
		t.Errorf("foreign route gone:\n%s", k.Dump())
	}
}

func TestSyncKernelErrors(t *testing.T) {
	ctx := context.Background()
	k := NewFake(hostLocal, hostRoutes()...)
	in := New(Options{Kernel: k})
	k.Fail = func(op string, r KernelRoute) error {
		switch r.Dst {
		case pfx("10.245.1.0/24"):
			return syscall.EPERM
		case pfx("10.245.2.0/24"):
			return syscall.EEXIST // someone was faster
		}
		return nil
	}
	err := in.Sync(ctx, []Route{route("10.245.1.0/24", "10.250.0.221"), route("10.245.2.0/24", "10.250.0.222"), route("10.245.3.0/24", "10.250.0.223")}, nil)
	if err == nil || !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "add 10.245.1.0/24 via 10.250.0.221") {
		t.Errorf("Sync error = %v, want the failed add", err)
	}
	// The others went on.
	if ops := k.Ops(); !reflect.DeepEqual(ops, []string{"add 10.245.3.0/24 via 10.250.0.223 proto 95 metric 2048"}) {
		t.Errorf("changes %q", ops)
	}
	if r := in.Refused(); len(r) != 1 || r[0].Route != route("10.245.2.0/24", "10.250.0.222") || !strings.Contains(r[0].Reason, "appeared") {
		t.Errorf("refused %v", r)
	}
	// A delete that fails is an error too; one that finds nothing is not.
	k.Fail = func(op string, r KernelRoute) error {
		if op == "delete" {
			return syscall.EBUSY
		}
		return nil
	}
	if err := in.Cleanup(ctx); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Cleanup error = %v", err)
	}
	k.Fail = func(op string, r KernelRoute) error {
		if op == "delete" {
			return syscall.ESRCH
		}
		return nil
	}
	if err := in.Cleanup(ctx); err != nil {
		t.Errorf("Cleanup of a route that vanished: %v", err)
	}
	if err := in.Sync(ctx, nil, nil); err != nil {
		t.Errorf("Sync of a route that vanished: %v", err)
	}
}

// noIPv6 is a kernel booted with ipv6.disable=1.
type noIPv6 struct{ *Fake }

func (k noIPv6) Routes(v6 bool) ([]KernelRoute, error) {
	if v6 {
		return nil, syscall.EAFNOSUPPORT
	}
	return k.Fake.Routes(false)
}

func TestSyncWithoutIPv6(t *testing.T) {
	ctx := context.Background()
	k := noIPv6{NewFake(hostLocal[:2], hostRoutes()[:2]...)}
	in := New(Options{Kernel: k})
	if err := in.Sync(ctx, []Route{route("10.245.1.0/24", "10.250.0.221")}, nil); err != nil {
		t.Errorf("IPv4 only: %v", err)
	}
	if err := in.Cleanup(ctx); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	// An IPv6 route wanted on such a kernel cannot be: an error, not a
	// silent success. (Its gateway is on no network here, so it has to
	// get past validation: give the host an IPv6 address.)
	k.local = append(k.local, pfx("fd00:250::2/64"))
	if err := in.Sync(ctx, []Route{route("fd00:245:1::/64", "fd00:250::221")}, nil); !errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Errorf("IPv6 route on a kernel without IPv6: %v", err)
	}
}

func TestForNodes(t *testing.T) {
	na := func(typ, ip string) model.NodeAddr { return model.NodeAddr{Type: typ, Addr: addr(ip)} }
	nodes := []model.NodeInfo{
		{Name: "b", Ready: true, Addresses: []model.NodeAddr{na("InternalIP", "10.250.0.222")},
			PodCIDRs: []netip.Prefix{pfx("10.245.2.0/24"), pfx("fd00:245:2::/64")}},
		{Name: "a", Ready: true, Addresses: []model.NodeAddr{na("ExternalIP", "203.0.113.1"), na("InternalIP", "10.250.0.221"), na("InternalIP", "fd00:250::221")},
			PodCIDRs: []netip.Prefix{pfx("10.245.1.0/24"), pfx("fd00:245:1::/64")}},
		{Name: "down", Ready: false, Addresses: []model.NodeAddr{na("InternalIP", "10.250.0.223")},
			PodCIDRs: []netip.Prefix{pfx("10.245.3.0/24")}},
		{Name: "new", Ready: true, Addresses: []model.NodeAddr{na("InternalIP", "10.250.0.224")}}, // no pod CIDR yet
		// A node whose admin claims the world's resolvers, and one that
		// claims more than the declared range.
		{Name: "rogue", Ready: true, Addresses: []model.NodeAddr{na("InternalIP", "10.250.0.225")},
			PodCIDRs: []netip.Prefix{pfx("8.8.8.0/24")}},
		{Name: "greedy", Ready: true, Addresses: []model.NodeAddr{na("InternalIP", "10.250.0.226")},
			PodCIDRs: []netip.Prefix{pfx("10.244.0.0/15")}},
		// The same CIDR as a, after a in name order.
		{Name: "copy", Ready: true, Addresses: []model.NodeAddr{na("InternalIP", "10.250.0.227")},
			PodCIDRs: []netip.Prefix{pfx("10.245.1.0/24")}},
	}
	within := []netip.Prefix{pfx("10.245.0.0/16"), pfx("fd00:245::/32")}
	got, problems := ForNodes("delta", nodes, nil, within)
	owner := func(n string) string { return `node ` + n + ` of cluster "delta"` }
	want := []Route{
		{Dst: pfx("10.245.1.0/24"), Via: addr("10.250.0.221"), Owner: owner("a")},
		{Dst: pfx("fd00:245:1::/64"), Via: addr("fd00:250::221"), Owner: owner("a")},
		{Dst: pfx("10.245.2.0/24"), Via: addr("10.250.0.222"), Owner: owner("b")},
		{Dst: pfx("10.245.1.0/24"), Via: addr("10.250.0.227"), Owner: owner("copy")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ForNodes = %v, want %v (in node name order)", got, want)
	}
	wantProblems := []string{
		"node b: pod CIDR fd00:245:2::/64 is not routed: the node has no InternalIP IPv6 address",
		"node greedy: pod CIDR 10.244.0.0/15 is not routed: it is outside the cluster's pod_cidrs (10.245.0.0/16, fd00:245::/32)",
		"node rogue: pod CIDR 8.8.8.0/24 is not routed: it is outside the cluster's pod_cidrs (10.245.0.0/16, fd00:245::/32)",
	}
	if !reflect.DeepEqual(problems, wantProblems) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(wantProblems, "\n"))
	}
	got, _ = ForNodes("delta", nodes, []string{"ExternalIP", "InternalIP"}, within)
	if got[0] != (Route{Dst: pfx("10.245.1.0/24"), Via: addr("203.0.113.1"), Owner: owner("a")}) {
		t.Errorf("ExternalIP preferred: %v", got)
	}
	// Without declared ranges nothing is routed.
	if got, problems := ForNodes("delta", nodes, nil, nil); len(got) != 0 || len(problems) != 7 {
		t.Errorf("without pod_cidrs: routes %v, problems %q", got, problems)
	}
}
