//go:build kernel

// nftables mode against the real kernel and nft. The tests program
// nftables, addresses and routes, so they run only in a network namespace
// other than the machine's (make kernel makes one and runs them there):
//
//	ip netns add t && ip netns exec t go test -tags kernel -run TestKernel ./internal/proxy/nftables/
package nftables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// elsewhere skips the test unless it runs as root in a named network
// namespace (ip netns), never the machine's own, which has no name.
func elsewhere(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	out, err := exec.Command("ip", "netns", "identify", strconv.Itoa(os.Getpid())).Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Skip("runs only in a network namespace of its own (make kernel makes one): it programs nftables")
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out)
}

func kernelProxier(t *testing.T, v6 bool) (*Proxier, knftables.Interface) {
	t.Helper()
	nft, err := knftables.New(familyOf(v6).nft, TableName)
	if err != nil {
		t.Skip(err)
	}
	p := New(Options{NFT: nft, Rules: &NetlinkWriter{}, IPv6: v6, MasqueradeMark: testMark, Conntrack: iptables.NewConntrack(), RoutedClients: testRouted})
	t.Cleanup(func() {
		if err := p.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return p, nft
}

func TestKernelUsable(t *testing.T) {
	elsewhere(t)
	if err := Usable(t.Context()); err != nil {
		t.Fatalf("Usable: %v", err)
	}
	if out := run(t, "nft", "list", "tables"); strings.Contains(out, "probe") {
		t.Errorf("the probe left its table:\n%s", out)
	}
}

// TestKernelInUse: tables of ours in either family make the mode in use,
// whatever others there are; cleanupAll removes ours and only ours.
func TestKernelInUse(t *testing.T) {
	elsewhere(t)
	ctx := t.Context()
	run(t, "nft", "add", "table", "ip", "nat")
	run(t, "nft", "add", "table", "inet", TableName) // another family's: not ours
	t.Cleanup(func() {
		_ = exec.Command("nft", "delete", "table", "ip", "nat").Run()
		_ = exec.Command("nft", "delete", "table", "inet", TableName).Run()
	})
	if inUse(ctx) {
		t.Fatal("in use with no table of ours")
	}
	for _, fam := range []string{"ip6", "ip"} {
		run(t, "nft", "add", "table", fam, TableName)
		if !inUse(ctx) {
			t.Fatalf("not in use with table %s %s", fam, TableName)
		}
	}
	if err := cleanupAll(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if inUse(ctx) {
		t.Error("in use after cleanupAll")
	}
	if out := run(t, "nft", "list", "tables"); !strings.Contains(out, "table ip nat") || !strings.Contains(out, "table inet "+TableName) {
		t.Errorf("cleanupAll removed others' tables:\n%s", out)
	}
}

// TestKernelSyncs: the kernel takes a full sync, random partial ones, and
// what it holds then reads back through explain as the model wants it;
// cleanup leaves `nft list ruleset` byte for byte as it was, with a
// firewalld-like and Docker-like tables beside ours.
func TestKernelSyncs(t *testing.T) {
	elsewhere(t)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			run(t, "nft", "add table inet firewalld")
			run(t, "nft", "add chain inet firewalld filter_FORWARD { type filter hook forward priority filter + 10; policy accept; }")
			run(t, "nft", "add rule inet firewalld filter_FORWARD ct state established,related accept")
			if _, err := exec.LookPath("iptables-nft"); err == nil {
				run(t, "iptables-nft", "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN")
				run(t, "iptables-nft", "-t", "filter", "-P", "FORWARD", "DROP")
			}
			before := run(t, "nft", "list", "ruleset")

			p, nft := kernelProxier(t, v6)
			st := testState()
			kernelSteps(t, p, st)
			st = testState()
			mustSync(t, p, st, true)
			ex := &explainer{readers: func() map[bool]reader { return map[bool]reader{v6: kernelReader{Interface: nft, fam: familyOf(v6)}} }}
			for _, c := range st.Clusters {
				for _, sp := range c.Ports {
					if sp.Key.IPv6 != v6 {
						continue
					}
					v, err := ex.ExplainPort(t.Context(), proxy.PortWant(ex, sp, sp.VIP()))
					if err != nil {
						t.Fatal(err)
					}
					if len(v.Mismatches) > 0 || v.Empty {
						t.Errorf("%v: explain finds %q (empty %v) in:\n%s", sp.Key, v.Mismatches, v.Empty, strings.Join(v.Lines, "\n"))
					}
				}
			}
			if m, err := p.Missing(t.Context()); err != nil || m != nil {
				t.Errorf("Missing = %q, %v", m, err)
			}
			if err := p.Cleanup(t.Context()); err != nil {
				t.Fatal(err)
			}
			if after := run(t, "nft", "list", "ruleset"); after != before {
				t.Errorf("cleanup changed the ruleset:\n%s\nwant:\n%s", after, before)
			}
			run(t, "nft", "flush", "ruleset")
		})
	}
}

// kernelSteps runs random changes through partial syncs against the
// kernel, and returns the state it left: each transaction must be one the kernel takes (the fake does not
// check that nothing deleted is still referred to).
func kernelSteps(t *testing.T, p *Proxier, st *model.State) *model.State {
	t.Helper()
	mustSync(t, p, st, true)
	w := &modeltest.World{Rng: rand.New(rand.NewPCG(5, 6)), St: st}
	for i, step := range w.Steps(40, "alpha", "beta") {
		w.Apply(step, modeltest.Changes)
		if err := p.Sync(t.Context(), w.St, false); err != nil {
			t.Fatalf("step %d (%s): %v", i, step, err)
		}
	}
	// A cluster that goes (a reload) takes its maps and the chains their
	// elements lead to, in one transaction.
	last := modeltest.State(modeltest.ClusterOf(w.St, "alpha"))
	if err := p.Sync(t.Context(), last, false); err != nil {
		t.Fatalf("removing a cluster: %v", err)
	}
	return last
}

// serveEndpoint answers "a1" at 10.0.1.1:8080, an address of this
// namespace, which also routes 10.96.0.0/16 (the ClusterIPs) to itself.
func serveEndpoint(t *testing.T) {
	t.Helper()
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "addr", "replace", "10.0.1.1/32", "dev", "lo")
	run(t, "ip", "route", "replace", "10.96.0.0/16", "dev", "lo")
	l, err := net.Listen("tcp", "10.0.1.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "a1")
			c.Close()
		}
	}()
}

// TestKernelTraffic: real connections from this namespace to ClusterIPs
// reach the endpoint the rules pick, a port without endpoints is refused
// at once, and each new connection counts in the port's counter.
func TestKernelTraffic(t *testing.T) {
	elsewhere(t)
	serveEndpoint(t)
	p, nft := kernelProxier(t, false)
	web := svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080")
	empty := svc("alpha", "default", "empty", "http", model.TCP, "10.96.0.14", 80)
	mustSync(t, p, state(cluster("alpha", true, alphaCIDRs, web, empty)), true)
	for range 3 {
		mustAnswer(t, "10.96.0.10:80", "a1")
	}
	start := time.Now()
	_, err := net.DialTimeout("tcp", "10.96.0.14:80", 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Errorf("a port without endpoints: %v after %v, want refused at once", err, time.Since(start))
	}
	cs, err := nft.ListCounters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == counterName(web.Key) && (c.Packets == nil || *c.Packets != 3) {
			t.Errorf("counter %s: %v packets, want 3 new connections", c.Name, c.Packets)
		}
	}
}

// TestKernelUpgradeFromEndpointChains: a table as the releases before
// issue 14 wrote it (an endpoint chain per endpoint, picked by an
// anonymous numgen vmap) is taken over by the first full sync, which
// deletes the endpoint chains and serves the port from its service chain.
func TestKernelUpgradeFromEndpointChains(t *testing.T) {
	elsewhere(t)
	serveEndpoint(t)
	web := svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080")
	ep := endpointChain(web.Key, netip.MustParseAddrPort("10.0.1.1:8080"))
	old := fmt.Sprintf(`add table ip %[1]s
add chain ip %[1]s nat-output { type nat hook output priority -105 ; }
add chain ip %[1]s %[2]s
add chain ip %[1]s %[3]s
add counter ip %[1]s %[4]s
add map ip %[1]s %[5]s { type ipv4_addr . inet_proto . inet_service : verdict ; }
add rule ip %[1]s %[3]s meta l4proto tcp dnat to 10.0.1.1:8080
add rule ip %[1]s %[2]s counter name "%[4]s"
add rule ip %[1]s %[2]s numgen random mod 1 vmap { 0 : goto %[3]s }
add element ip %[1]s %[5]s { 10.96.0.10 . tcp . 80 : goto %[2]s }
add rule ip %[1]s nat-output ip daddr . meta l4proto . th dport vmap @%[5]s
`, TableName, serviceChain(web.Key), ep, counterName(web.Key), dispatchMap("alpha"))
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(old)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("writing the old table: %v: %s", err, out)
	}
	p, _ := kernelProxier(t, false)
	mustSync(t, p, state(cluster("alpha", true, alphaCIDRs, web)), true)
	if out := run(t, "nft", "list", "table", "ip", TableName); strings.Contains(out, "chain "+ep) || strings.Contains(out, "vmap {") {
		t.Errorf("the old endpoint chains or anonymous vmap are left:\n%s", out)
	}
	c, err := net.DialTimeout("tcp", "10.96.0.10:80", 2*time.Second)
	if err != nil {
		t.Fatalf("the service after the upgrade: %v", err)
	}
	c.Close()
}

// mustAnswer connects to addr and wants want as the whole answer.
func mustAnswer(t *testing.T, addr, want string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != want {
		t.Fatalf("%s answered %q, want %q", addr, b, want)
	}
}
