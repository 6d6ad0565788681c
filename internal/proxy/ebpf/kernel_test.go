//go:build kernel

// Mode ebpf against this machine's kernel, each test in a lab of its own
// (lab_kernel_test.go): a throw-away network namespace, cgroup and bpffs.
// As root:
//
//	go test -tags kernel -c -o /tmp/ebpf-kernel.test ./internal/proxy/ebpf/ && /tmp/ebpf-kernel.test -test.v
package ebpf

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

const vip = "10.96.0.10"

func state(ports ...*model.ServicePort) *model.State {
	return modeltest.State(modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, ports...))
}

func mustSync(t *testing.T, p *Proxier, st *model.State, full bool) {
	t.Helper()
	if err := p.Sync(t.Context(), st, full); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// reachesAll makes n attempts and wants each answered by one of bes, seen
// from the VIP, and every one of bes answering some.
func reachesAll(t *testing.T, c *client, cmd, target string, n int, bes []string) {
	t.Helper()
	seen := map[string]int{}
	for range n {
		r := c.do(cmd + " " + target)
		if r.Err != "" {
			t.Fatalf("%s %s: %s", cmd, target, r.Err)
		}
		if !slices.Contains(bes, r.Backend) {
			t.Fatalf("%s %s: answered by %q, not one of %v", cmd, target, r.Backend, bes)
		}
		if r.Peer != target {
			t.Fatalf("%s %s: the peer is %s, want the VIP", cmd, target, r.Peer)
		}
		seen[r.Backend]++
	}
	if len(seen) != len(bes) {
		t.Errorf("%s %s: %d attempts reached %v, want every one of %v", cmd, target, n, seen, bes)
	}
	t.Logf("%s %s: %v", cmd, target, seen)
}

// TestKernelTCP: connect() to the VIP reaches every endpoint, and
// getpeername shows the VIP.
func TestKernelTCP(t *testing.T) {
	l := newLab(t)
	bes := l.backends(11, 3, 8080)
	p := l.proxier()
	mustSync(t, p, state(modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)), true)
	reachesAll(t, l.client(), "tcp", vip+":80", 60, bes)
}

// TestKernelExternalIP: a port's external IPs lead where its VIP does,
// and getpeername shows the address dialed.
func TestKernelExternalIP(t *testing.T) {
	l := newLab(t)
	bes := l.backends(121, 2, 8080)
	p := l.proxier()
	web := modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)
	web.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	mustSync(t, p, state(web), true)
	c := l.client()
	reachesAll(t, c, "tcp", "192.0.2.10:80", 40, bes)
	reachesAll(t, c, "tcp", vip+":80", 40, bes)
}

// TestKernelUDP: sendto() to the VIP reaches every endpoint and the
// answers come from the VIP (recvmsg4); a connected socket's peer is the
// VIP (getpeername4) and its answers arrive.
func TestKernelUDP(t *testing.T) {
	l := newLab(t)
	bes := l.backends(21, 3, 5353)
	p := l.proxier()
	mustSync(t, p, state(modeltest.Svc("a", "default", "dns", "", model.UDP, vip, 53, bes...)), true)
	c := l.client()
	reachesAll(t, c, "udp", vip+":53", 60, bes)
	reachesAll(t, c, "cudp", vip+":53", 60, bes)
	// TCP to the same address and port is another service: none.
	if r := c.do("tcp " + vip + ":53"); r.Errno != int(unix.ENETUNREACH) {
		t.Errorf("TCP to a UDP service's port: %+v, want it untranslated (ENETUNREACH: the lab has no route)", r)
	}
}

// TestKernelRefuse: a port without endpoints fails connect() and
// sendto() at once with ECONNREFUSED, and counts it.
func TestKernelRefuse(t *testing.T) {
	l := newLab(t)
	p := l.proxier()
	mustSync(t, p, state(
		modeltest.Svc("a", "default", "none", "", model.TCP, vip, 80),
		modeltest.Svc("a", "default", "none", "dns", model.UDP, vip, 53),
	), true)
	c := l.client()
	for _, cmd := range []string{"tcp", "cudp", "udp"} {
		port := map[string]string{"tcp": ":80", "cudp": ":53", "udp": ":53"}[cmd]
		r := c.do(cmd + " " + vip + port)
		if r.Errno != int(unix.ECONNREFUSED) {
			t.Errorf("%s to a port without endpoints: %+v, want ECONNREFUSED", cmd, r)
		}
		if r.Took > 100*time.Millisecond {
			t.Errorf("%s to a port without endpoints took %v, want an immediate refusal", cmd, r.Took)
		}
	}
	// What kube_outpost_no_backend_total reads.
	if sum, err := p.NoBackend(t.Context()); err != nil || sum != 3 {
		t.Errorf("ko_nobackend counts %d (%v), want 3", sum, err)
	}
}

// TestKernelDatapath: what status shows is what the kernel holds: every
// hook with its program on the lab's cgroup, and the services' slots
// and backends counted in the maps.
func TestKernelDatapath(t *testing.T) {
	l := newLab(t)
	p := l.proxier()
	if dp, err := p.Datapath(t.Context()); err != nil || len(dp.Programs)+len(dp.Maps) != 0 {
		t.Errorf("before the first sync: %+v, %v", dp, err)
	}
	bes := l.backends(41, 3, 8080)
	mustSync(t, p, state(modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)), true)
	dp, err := p.Datapath(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(dp.Programs) != len(hooks) {
		t.Errorf("%d programs, want %d: %+v", len(dp.Programs), len(hooks), dp.Programs)
	}
	for i, pr := range dp.Programs {
		if pr.Hook != hooks[i].name || pr.ID == 0 || pr.Target != l.cgroup {
			t.Errorf("program %d: %+v, want hook %s on %s", i, pr, hooks[i].name, l.cgroup)
		}
	}
	fill := map[string]proxy.MapFill{}
	for _, m := range dp.Maps {
		fill[m.Name] = m
	}
	// Slot 0 (the count) and one slot per endpoint; one backend each.
	for name, want := range map[string]int{"ko_svc4": 4, "ko_be4": 3, "ko_svc6": 0, "ko_be6": 0} {
		if m := fill[name]; m.Entries != want || m.Capacity == 0 {
			t.Errorf("%s: %+v, want %d entries of a known capacity", name, m, want)
		}
	}
}

// TestKernelScope: sockets of another network namespace than the
// configured one are not translated.
func TestKernelScope(t *testing.T) {
	l := newLab(t)
	bes := l.backends(31, 1, 8080)
	p := New(Options{PinDir: l.pinDir, Cgroup: l.cgroup, NetnsCookie: l.cookie + 1})
	t.Cleanup(func() { p.Cleanup(t.Context()) })
	mustSync(t, p, state(modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)), true)
	if r := l.client().do("tcp " + vip + ":80"); r.Errno != int(unix.ENETUNREACH) {
		t.Errorf("a connect() from another namespace: %+v, want it untranslated (ENETUNREACH)", r)
	}
}

// TestKernelUpdateUnderLoad: endpoints come and go, in partial syncs,
// while the client connects in a loop: no connect() fails, and the
// endpoints added are reached.
func TestKernelUpdateUnderLoad(t *testing.T) {
	l := newLab(t)
	bes := l.backends(41, 6, 8080)
	p := l.proxier()
	svc := modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes[:3]...)
	mustSync(t, p, state(svc), true)
	c := l.client()
	done := make(chan result)
	go func() { done <- c.do("loop " + vip + ":80 3s") }()
	sets := [][]string{bes[3:], bes[:1], bes, bes[2:4], bes[5:]}
	for i := 0; ; i++ {
		select {
		case r := <-done:
			t.Logf("%d connects over %d updates, %d failed; reached %v", r.Count, i, r.Failed, r.Backends)
			if r.Failed > 0 {
				t.Errorf("%d of %d connects failed under updates, the first: %s", r.Failed, r.Count, r.Err)
			}
			if len(r.Backends) != len(bes) {
				t.Errorf("reached %v, want every one of %v", r.Backends, bes)
			}
			return
		default:
		}
		mustSync(t, p, state(modeltest.WithEndpoints(svc, sets[i%len(sets)]...)), i%10 == 9)
		time.Sleep(2 * time.Millisecond)
	}
}

// TestKernelRestart: a daemon that stops leaves the hooks and maps
// pinned, still translating; the next one takes them over with no failed
// connect(), and its first full sync removes what the state no longer
// has.
func TestKernelRestart(t *testing.T) {
	l := newLab(t)
	bes := l.backends(51, 2, 8080)
	p1 := l.proxier()
	web := modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)
	old := modeltest.Svc("a", "default", "old", "", model.TCP, "10.96.0.11", 80, bes...)
	mustSync(t, p1, state(web, old), true)
	c := l.client()
	done := make(chan result)
	go func() { done <- c.do("loop " + vip + ":80 1s") }()
	time.Sleep(200 * time.Millisecond)
	p1.Close()
	time.Sleep(200 * time.Millisecond)
	p2 := l.proxier()
	mustSync(t, p2, state(web), true)
	r := <-done
	t.Logf("%d connects across the restart, %d failed; reached %v", r.Count, r.Failed, r.Backends)
	if r.Failed > 0 || r.Count == 0 {
		t.Errorf("%d of %d connects failed across the restart, the first: %s", r.Failed, r.Count, r.Err)
	}
	if got := attached(t, l.cgroup); got != len(hooks) {
		t.Errorf("%d programs attached to the cgroup after the restart, want %d (one per hook)", got, len(hooks))
	}
	if r := c.do("tcp 10.96.0.11:80"); r.Errno != int(unix.ENETUNREACH) {
		t.Errorf("a service gone before the restart: %+v, want it untranslated", r)
	}
}

// TestKernelCleanup: Cleanup detaches every hook and removes every pin.
func TestKernelCleanup(t *testing.T) {
	l := newLab(t)
	bes := l.backends(61, 1, 8080)
	p := l.proxier()
	mustSync(t, p, state(modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)), true)
	c := l.client()
	if r := c.do("tcp " + vip + ":80"); r.Err != "" {
		t.Fatal(r.Err)
	}
	if err := p.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := attached(t, l.cgroup); got != 0 {
		t.Errorf("%d programs still attached to the cgroup", got)
	}
	if _, err := os.Stat(l.pinDir); !os.IsNotExist(err) {
		t.Errorf("the pin directory is still there: %v", err)
	}
	if r := c.do("tcp " + vip + ":80"); r.Errno != int(unix.ENETUNREACH) {
		t.Errorf("after Cleanup: %+v, want it untranslated", r)
	}
}

// TestKernelModeCleanup: `kube-outpost cleanup`, which has no config,
// finds a run's pins under the bpffs by their ko_config pin and leaves
// nothing attached or pinned.
func TestKernelModeCleanup(t *testing.T) {
	l := newLab(t)
	bes := l.backends(62, 1, 8080)
	p := l.proxier()
	mustSync(t, p, state(modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)), true)
	if got := pinDirs(l.bpffs); !slices.Equal(got, []string{l.pinDir}) {
		t.Fatalf("pinDirs = %q, want %q", got, l.pinDir)
	}
	// The daemon is gone (its links closed), as when cleanup runs.
	p.mu.Lock()
	p.dp.close()
	p.dp = nil
	p.mu.Unlock()
	if got := attached(t, l.cgroup); got != len(hooks) {
		t.Fatalf("%d programs attached after the daemon closed its links, want the %d pinned ones", got, len(hooks))
	}
	if err := cleanupPins(l.bpffs, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := attached(t, l.cgroup); got != 0 {
		t.Errorf("%d programs still attached to the cgroup", got)
	}
	if got := pinDirs(l.bpffs); len(got) != 0 {
		t.Errorf("pins left in %q", got)
	}
}

// TestKernelEnsureBPFFS: prepare mounts a bpffs where none is, and
// leaves one that is there alone.
func TestKernelEnsureBPFFS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bpf")
	mounted, err := ensureBPFFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || !mounted || st.Type != unix.BPF_FS_MAGIC {
		t.Fatalf("after ensureBPFFS: mounted %v, fs type %#x (%v), want a bpffs", mounted, st.Type, err)
	}
	if again, err := ensureBPFFS(dir); again || err != nil {
		t.Errorf("a second ensureBPFFS mounted again (%v) or failed: %v", again, err)
	}
}

// attached counts the programs attached to cgroup at our hooks.
func attached(t *testing.T, cgroup string) int {
	t.Helper()
	f, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for _, h := range hooks {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: h.attach})
		if err != nil {
			t.Fatal(err)
		}
		n += len(q.Programs)
	}
	return n
}

// TestKernelIPv6: the same for an IPv6 service: balancing, the VIP seen
// by getpeername and recvfrom, refusal.
func TestKernelIPv6(t *testing.T) {
	l := newLab(t)
	web, dns := l.backends6(0x11, 3, 8080), l.backends6(0x21, 2, 5353)
	p := l.proxier()
	const vip6 = "fd00:96::10"
	mustSync(t, p, modeltest.State(modeltest.Cluster("a", true, []string{"fd00:96::/112"},
		modeltest.Svc("a", "default", "web", "", model.TCP, vip6, 80, web...),
		modeltest.Svc("a", "default", "dns", "", model.UDP, vip6, 53, dns...),
		modeltest.Svc("a", "default", "none", "", model.TCP, vip6, 81),
	)), true)
	c := l.client()
	reachesAll(t, c, "tcp", "["+vip6+"]:80", 60, web)
	reachesAll(t, c, "udp", "["+vip6+"]:53", 40, dns)
	reachesAll(t, c, "cudp", "["+vip6+"]:53", 40, dns)
	if r := c.do("tcp [" + vip6 + "]:81"); r.Errno != int(unix.ECONNREFUSED) || r.Took > 100*time.Millisecond {
		t.Errorf("an IPv6 port without endpoints: %+v, want ECONNREFUSED at once", r)
	}
}

// TestKernelV4Mapped: an AF_INET6 socket dialing an IPv4 service at
// ::ffff:a.b.c.d is balanced too, and sees that address as its peer.
func TestKernelV4Mapped(t *testing.T) {
	l := newLab(t)
	bes := l.backends(71, 2, 8080)
	p := l.proxier()
	mustSync(t, p, state(
		modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...),
		modeltest.Svc("a", "default", "dns", "", model.UDP, vip, 53, bes...),
		modeltest.Svc("a", "default", "none", "", model.TCP, vip, 81),
	), true)
	c := l.client()
	reachesAll(t, c, "tcp6m", "[::ffff:"+vip+"]:80", 40, bes)
	reachesAll(t, c, "udp6m", "[::ffff:"+vip+"]:53", 40, bes)
	if r := c.do("tcp6m [::ffff:" + vip + "]:81"); r.Errno != int(unix.ECONNREFUSED) {
		t.Errorf("a port without endpoints through a mapped address: %+v, want ECONNREFUSED", r)
	}
}

// TestKernelExplain: explain reads the pinned maps back, as the model
// wants them, for both families and for a refusal.
func TestKernelExplain(t *testing.T) {
	l := newLab(t)
	p := l.proxier()
	web := modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, "10.1.0.1:8080", "10.1.0.2:8080")
	none := modeltest.Svc("a", "default", "none", "", model.UDP, vip, 53)
	web6 := modeltest.Svc("a", "default", "web", "", model.TCP, "fd00:96::10", 80, "[fd00::1]:8080")
	mustSync(t, p, modeltest.State(modeltest.Cluster("a", true, []string{"10.96.0.0/16", "fd00:96::/112"}, web, none, web6)), true)
	ex := &explainer{dir: l.pinDir}
	for _, sp := range []*model.ServicePort{web, none, web6} {
		v, err := ex.ExplainPort(t.Context(), proxy.PortWant(ex, sp, sp.VIP()))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s:\n%s", sp.Key, strings.Join(v.Lines, "\n"))
		if v.Empty || len(v.Mismatches) > 0 || len(v.Endpoints) != len(sp.Endpoints) {
			t.Errorf("%s: %+v", sp.Key, v)
		}
	}
	missing := modeltest.Svc("a", "default", "missing", "", model.TCP, "10.96.0.99", 80, "10.1.0.1:8080")
	if v, err := ex.ExplainPort(t.Context(), proxy.PortWant(ex, missing, missing.VIP())); err != nil || !v.Empty || len(v.Mismatches) != 1 {
		t.Errorf("a port the maps lack: %+v, %v; want it empty, and that a mismatch", v, err)
	}
	// What the maps hold, read without the daemon.
	pinned, err := ReadPinned(l.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(pinned) != 3 || pinned[0].Target.String() != vip+":53" || len(pinned[0].Backends) != 0 ||
		pinned[1].Target.String() != vip+":80" || len(pinned[1].Backends) != 2 || pinned[2].Backends[0].Addr.String() != "[fd00::1]:8080" {
		t.Errorf("ReadPinned: %+v", pinned)
	}
}

// TestKernelStaleUDP: a connected UDP socket whose endpoint leaves the
// service is destroyed: the kernel disconnects it, so its next send()
// fails at once with EDESTADDRREQ (a recv() waiting then gets
// ECONNABORTED) instead of waiting for answers that never come. A new
// socket reaches a live endpoint; a socket of another service, or
// connected to a live endpoint, is left alone.
func TestKernelStaleUDP(t *testing.T) {
	l := newLab(t)
	bes := l.backends(81, 2, 5353)
	other := l.backends(91, 1, 5353)
	p := l.proxier()
	p.inNetns = func(f func() error) (err error) {
		l.inNS(func() { err = f() })
		return err
	}
	dns := modeltest.Svc("a", "default", "dns", "", model.UDP, vip, 53, bes...)
	keep := modeltest.Svc("a", "default", "keep", "", model.UDP, "10.96.0.12", 53, other...)
	mustSync(t, p, state(dns, keep), true)
	if p.destroyer == nil {
		t.Skip("this kernel has no bpf_sock_destroy")
	}
	c := l.client()
	// Sockets until each endpoint holds one.
	on := map[string]string{}
	for i := 0; len(on) < 2 && i < 50; i++ {
		name := fmt.Sprint("s", i)
		r := c.do("hold " + name + " " + vip + ":53")
		if r.Err != "" {
			t.Fatal(r.Err)
		}
		on[r.Backend] = name
	}
	if len(on) < 2 {
		t.Fatalf("50 sockets reached only %v", on)
	}
	if r := c.do("hold k 10.96.0.12:53"); r.Err != "" {
		t.Fatal(r.Err)
	}
	if r := c.do("hold direct " + bes[0]); r.Err != "" {
		t.Fatal(r.Err)
	}
	mustSync(t, p, state(modeltest.WithEndpoints(dns, bes[1]), keep), false)
	r := c.do("again " + on[bes[0]])
	t.Logf("the socket on the endpoint that left: %+v", r)
	if (r.Errno != int(unix.EDESTADDRREQ) && r.Errno != int(unix.ECONNABORTED)) || r.Took > 100*time.Millisecond {
		t.Errorf("the socket on the endpoint that left: %+v, want EDESTADDRREQ or ECONNABORTED at once", r)
	}
	if r := c.do("again " + on[bes[1]]); r.Err != "" || r.Backend != bes[1] {
		t.Errorf("the socket on the endpoint that stayed: %+v", r)
	}
	if r := c.do("again k"); r.Err != "" || r.Backend != other[0] {
		t.Errorf("the socket of another service: %+v", r)
	}
	if r := c.do("again direct"); r.Err != "" || r.Backend != bes[0] {
		t.Errorf("a socket connected to the endpoint's own address: %+v", r)
	}
	if r := c.do("cudp " + vip + ":53"); r.Backend != bes[1] {
		t.Errorf("a new socket: %+v, want %s", r, bes[1])
	}
}

// TestKernelAffinity: with ClientIP affinity every connect() of this
// host's namespace (its one client) reaches the same endpoint, over TCP,
// unconnected UDP and IPv6; when that endpoint leaves, the next ones
// stick to another without a failure; without affinity they spread
// again.
func TestKernelAffinity(t *testing.T) {
	l := newLab(t)
	bes := l.backends(101, 4, 8080)
	bes6 := l.backends6(0x101, 3, 8080)
	p := l.proxier()
	web := modeltest.WithAffinity(modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...), 3*time.Hour)
	dns := modeltest.WithAffinity(modeltest.Svc("a", "default", "dns", "", model.UDP, vip, 53, bes...), 3*time.Hour)
	web6 := modeltest.WithAffinity(modeltest.Svc("a", "default", "web", "", model.TCP, "fd00:96::10", 80, bes6...), 3*time.Hour)
	// The same endpoints behind another port keep their backend entries
	// when they leave web: the affinity itself must be forgotten.
	other := modeltest.Svc("a", "default", "other", "", model.TCP, vip, 81, bes...)
	st := func(ports ...*model.ServicePort) *model.State {
		return modeltest.State(modeltest.Cluster("a", true, []string{"10.96.0.0/16", "fd00:96::/112"}, append(ports, other)...))
	}
	mustSync(t, p, st(web, dns, web6), true)
	c := l.client()
	reached := func(cmd, target string, n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			r := c.do(cmd + " " + target)
			if r.Err != "" {
				t.Fatalf("%s %s: %s", cmd, target, r.Err)
			}
			seen[r.Backend]++
		}
		return seen
	}
	var sticky string
	for _, x := range []struct{ cmd, target string }{{"tcp", vip + ":80"}, {"udp", vip + ":53"}, {"tcp", "[fd00:96::10]:80"}} {
		seen := reached(x.cmd, x.target, 30)
		if len(seen) != 1 {
			t.Errorf("%s %s with affinity reached %v, want one endpoint", x.cmd, x.target, seen)
		}
		if x.cmd == "tcp" && sticky == "" {
			for b := range seen {
				sticky = b
			}
		}
	}
	var rest []string
	for _, b := range bes {
		if b != sticky {
			rest = append(rest, b)
		}
	}
	mustSync(t, p, st(modeltest.WithEndpoints(web, rest...), dns, web6), false)
	seen := reached("tcp", vip+":80", 30)
	if len(seen) != 1 || seen[sticky] > 0 {
		t.Errorf("after %s left: reached %v, want one other endpoint", sticky, seen)
	}
	var none model.ServicePort = *web
	none.Affinity = 0
	mustSync(t, p, st(&none, dns, web6), false)
	if seen := reached("tcp", vip+":80", 30); len(seen) < 2 {
		t.Errorf("without affinity: reached %v, want a spread", seen)
	}
}

// TestKernelMigrate: a previous version pinned its maps with another
// capacity. The new one builds new maps beside them, copies what a
// cluster it has not synced yet had, attaches its programs once the maps
// hold the state and pins the new maps in place of the old: no connect()
// fails across it, and the unsynced cluster's service still works.
func TestKernelMigrate(t *testing.T) {
	l := newLab(t)
	bes := l.backends(111, 2, 8080)
	p1 := l.proxier()
	p1.spec = func(s *ebpf.CollectionSpec) {
		s.Maps["ko_svc4"].MaxEntries = 1024
		s.Maps["ko_be4"].MaxEntries = 1024
	}
	web := modeltest.Svc("a", "default", "web", "", model.TCP, vip, 80, bes...)
	kept := modeltest.Svc("b", "default", "kept", "", model.TCP, "10.97.0.10", 80, bes...)
	mustSync(t, p1, modeltest.State(
		modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, web),
		modeltest.Cluster("b", true, []string{"10.97.0.0/16"}, kept),
	), true)
	c := l.client()
	done := make(chan result)
	go func() { done <- c.do("loop " + vip + ":80 1s") }()
	time.Sleep(200 * time.Millisecond)
	p1.Close()
	p2 := l.proxier()
	mustSync(t, p2, modeltest.State(
		modeltest.Cluster("a", true, []string{"10.96.0.0/16"}, web),
		modeltest.Cluster("b", false, []string{"10.97.0.0/16"}),
	), true)
	r := <-done
	t.Logf("%d connects across the migration, %d failed; reached %v", r.Count, r.Failed, r.Backends)
	if r.Failed > 0 || r.Count == 0 {
		t.Errorf("%d of %d connects failed across the migration, the first: %s", r.Failed, r.Count, r.Err)
	}
	if r := c.do("tcp 10.97.0.10:80"); r.Err != "" {
		t.Errorf("the unsynced cluster's service after the migration: %s", r.Err)
	}
	for _, name := range []string{"ko_svc4", "ko_be4"} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(l.pinDir, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.MaxEntries() == 1024 {
			t.Errorf("%s is still the old map", name)
		}
		m.Close()
	}
	if got := attached(t, l.cgroup); got != len(hooks) {
		t.Errorf("%d programs attached, want %d", got, len(hooks))
	}
}
