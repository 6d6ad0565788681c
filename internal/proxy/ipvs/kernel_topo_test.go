//go:build ipvskernel && linux

package ipvs

// The network namespaces of the real-kernel tests (kernel_test.go).
//
// Every test builds its own: a "host" namespace, where the Proxier runs and
// clients connect from, and two "pod" namespaces behind a bridge in it, with
// TCP and UDP servers that answer with their name and the address they see
// the client at. A dual-stack topology (newDualTopo) gives the bridge and the
// pods IPv6 addresses too, and the pods' servers listen on both families.
// Nothing happens in the namespace the test binary starts in.
//
// How code runs in a namespace: setns(2) on a locked OS thread (inNS). The
// Proxier runs entirely on the calling goroutine: its netlink sockets,
// /proc/sys writes and the iptables/ipset commands it forks all follow that
// thread's namespace, as do sockets made by dial and listen (which keep it
// for their whole life). Threads the Go runtime creates meanwhile come from
// a clean template thread, never from a switched one.

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

var topoSeq atomic.Int32

const (
	hostBridgeIP  = "10.250.0.1"
	hostBridgeIP6 = "fd00:250::1"
)

// topo is one test's namespaces.
type topo struct {
	t     *testing.T
	host  string
	pods  map[string]netip.Addr // name -> IPv4 address
	pods6 map[string]netip.Addr // name -> IPv6 address; empty unless dual-stack
}

// requireIPVS skips the test unless this is root on a kernel with ip_vs
// (loading it if needed), and fails it when a tool the tests need is
// missing: the VM image must have them.
func requireIPVS(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: run inside the VM of test/vm")
	}
	if err := NewKernel().EnsureModule(t.Context()); err != nil {
		t.Skipf("no IPVS in this kernel: %v", err)
	}
	for _, bin := range []string{"ip", "ipset", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed (iproute2, ipset, iptables packages): %v", bin, err)
		}
	}
}

// newTopo makes the namespaces, IPv4 only, deleted when the test ends.
func newTopo(t *testing.T) *topo {
	t.Helper()
	return makeTopo(t, false)
}

// newDualTopo makes the namespaces of newTopo with IPv6 as well: the
// bridge has hostBridgeIP6/64 and the pods fd00:250::11 and ::12 (pods6).
func newDualTopo(t *testing.T) *topo {
	t.Helper()
	return makeTopo(t, true)
}

func makeTopo(t *testing.T, dual bool) *topo {
	t.Helper()
	prefix := fmt.Sprintf("koipvs%dx%d-", os.Getpid(), topoSeq.Add(1))
	tp := &topo{t: t, host: prefix + "host", pods: map[string]netip.Addr{}, pods6: map[string]netip.Addr{}}
	addNS(t, tp.host)
	if dual {
		noDAD(t, tp.host)
	}
	run(t, "ip", "-n", tp.host, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", tp.host, "addr", "add", hostBridgeIP+"/24", "dev", "br0")
	if dual {
		run(t, "ip", "-n", tp.host, "addr", "add", hostBridgeIP6+"/64", "dev", "br0", "nodad")
	}
	run(t, "ip", "-n", tp.host, "link", "set", "br0", "up")
	for i, name := range []string{"pod1", "pod2"} {
		ns := prefix + name
		ip := netip.MustParseAddr(fmt.Sprintf("10.250.0.%d", 11+i))
		addNS(t, ns)
		if dual {
			noDAD(t, ns)
		}
		run(t, "ip", "-n", tp.host, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", tp.host, "link", "set", name, "master", "br0", "up")
		run(t, "ip", "-n", ns, "addr", "add", ip.String()+"/24", "dev", "eth0")
		if dual {
			ip6 := netip.MustParseAddr(fmt.Sprintf("fd00:250::%d", 11+i))
			run(t, "ip", "-n", ns, "addr", "add", ip6.String()+"/64", "dev", "eth0", "nodad")
			tp.pods6[name] = ip6
		}
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		// No default route, of either family: a reply reaches the host
		// only if the request was masqueraded to the bridge address.
		tp.pods[name] = ip
		startServers(t, ns, name, dual)
	}
	return tp
}

// noDAD turns off duplicate address detection in namespace ns, for the
// interfaces there and those made later, so that IPv6 addresses are
// usable at once (the addresses are added with nodad as well).
func noDAD(t *testing.T, ns string) {
	t.Helper()
	inNS(t, ns, func() {
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/accept_dad", []byte("0"), 0o644); err != nil {
				t.Fatalf("accept_dad in %s: %v", ns, err)
			}
		}
	})
}

func addNS(t *testing.T, ns string) {
	t.Helper()
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Logf("ip netns delete %s: %v: %s", ns, err, out)
		}
	})
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs fn on this goroutine's thread switched into namespace ns. If
// switching back fails, the thread stays locked and dies with the
// goroutine instead of serving others in the wrong namespace.
func inNS(t testing.TB, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	target, err := netns.GetFromName(ns)
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("open netns %s: %v", ns, err)
	}
	if err := netns.Set(target); err != nil {
		orig.Close()
		target.Close()
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", ns, err)
	}
	defer func() {
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		orig.Close()
		target.Close()
	}()
	fn()
}

// in runs fn in the host namespace.
func (tp *topo) in(fn func()) {
	tp.t.Helper()
	inNS(tp.t, tp.host, fn)
}

// startServers serves, in namespace ns, TCP on :8080 (one answer per line
// received, for as long as the connection lasts) and UDP on :5353 (one
// answer per datagram), over IPv4 and, when v6, over IPv6 as well (separate
// IPv6-only sockets, so that the IPv4 ones stay what they were). An answer
// is "<name> <client address>".
func startServers(t *testing.T, ns, name string, v6 bool) {
	families := []string{"4"}
	if v6 {
		families = append(families, "6")
	}
	var lns []net.Listener
	var pcs []net.PacketConn
	inNS(t, ns, func() {
		for _, f := range families {
			ln, err := net.Listen("tcp"+f, ":8080")
			if err != nil {
				t.Fatal(err)
			}
			lns = append(lns, ln)
			pc, err := net.ListenPacket("udp"+f, ":5353")
			if err != nil {
				t.Fatal(err)
			}
			pcs = append(pcs, pc)
		}
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		for _, pc := range pcs {
			pc.Close()
		}
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := bufio.NewReader(c)
					for {
						if _, err := r.ReadString('\n'); err != nil {
							c.Close()
							return
						}
						fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
					}
				}()
			}
		}()
	}
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				_, addr, err := pc.ReadFrom(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", name, addr)), addr)
			}
		}()
	}
}

// answer is what a pod server says: its name and where it saw the client.
type answer struct {
	pod    string
	client netip.Addr
}

func parseAnswer(line string) (answer, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return answer{}, fmt.Errorf("bad answer %q", line)
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return answer{}, fmt.Errorf("bad answer %q: %v", line, err)
	}
	return answer{pod: f[0], client: ap.Addr()}, nil
}

// tcpConn is a client connection from the host namespace.
type tcpConn struct {
	c *net.TCPConn
	r *bufio.Reader
}

// network is proto ("tcp", "udp") with the family of addr, "ip:port" or
// "[ip6]:port".
func network(proto, addr string) string {
	if a, err := netip.ParseAddrPort(addr); err == nil && a.Addr().Is6() {
		return proto + "6"
	}
	return proto + "4"
}

// dialTCP connects from the host namespace.
func (tp *topo) dialTCP(addr string) (*tcpConn, error) {
	var c net.Conn
	var err error
	tp.in(func() { c, err = net.DialTimeout(network("tcp", addr), addr, 3*time.Second) })
	if err != nil {
		return nil, err
	}
	return &tcpConn{c: c.(*net.TCPConn), r: bufio.NewReader(c)}, nil
}

// ask sends a line and reads the answer.
func (c *tcpConn) ask() (answer, error) {
	_ = c.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c.c, "hello\n"); err != nil {
		return answer{}, err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(line)
}

// abort closes with a reset, which IPVS expires in seconds (a FIN would
// leave the IPVS connection in TIME_WAIT for two minutes).
func (c *tcpConn) abort() {
	_ = c.c.SetLinger(0)
	_ = c.c.Close()
}

// askTCP makes one new connection and asks once.
func (tp *topo) askTCP(addr string) (answer, error) {
	c, err := tp.dialTCP(addr)
	if err != nil {
		return answer{}, err
	}
	defer c.abort()
	return c.ask()
}

// askUDP sends one datagram from a new socket and reads the answer.
func (tp *topo) askUDP(addr string) (answer, error) {
	var c net.Conn
	var err error
	tp.in(func() { c, err = net.Dial(network("udp", addr), addr) })
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return answer{}, err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(string(buf[:n]))
}

// podsAnswering asks n times with ask and returns how often each pod answered. Every
// answer must come from the host's bridge address of addr's family
// (masqueraded).
func (tp *topo) podsAnswering(n int, ask func(string) (answer, error), addr string) map[string]int {
	tp.t.Helper()
	bridge := netip.MustParseAddr(hostBridgeIP)
	if network("tcp", addr) == "tcp6" {
		bridge = netip.MustParseAddr(hostBridgeIP6)
	}
	seen := map[string]int{}
	for range n {
		a, err := ask(addr)
		if err != nil {
			tp.t.Fatalf("%s: %v", addr, err)
		}
		if a.client != bridge {
			tp.t.Errorf("%s: pod %s saw the client at %s, want the host's %s (masquerade)", addr, a.pod, a.client, bridge)
		}
		seen[a.pod]++
	}
	return seen
}

// ipvsEntry is a virtual server as /proc/net/ip_vs shows it.
type ipvsEntry struct {
	Service string // "TCP 10.96.0.10:80 rr", "TCP [fd00:96::10]:80 rr", "... rr persistent"
	Dests   []ipvsDest
}

type ipvsDest struct {
	Addr             string // "10.250.0.11:8080", "[fd00:250::11]:8080"
	Forward          string // "Masq"
	Weight           int
	Active, Inactive int
}

// readIPVS reads /proc/net/ip_vs of the host namespace. /proc/net follows
// the process's main thread; /proc/thread-self/net follows ours.
func (tp *topo) readIPVS() []ipvsEntry {
	tp.t.Helper()
	var data []byte
	var err error
	tp.in(func() { data, err = readProcOnce("/proc/thread-self/net/ip_vs") })
	if err != nil {
		tp.t.Fatal(err)
	}
	es, err := parseProcIPVS(string(data))
	if err != nil {
		tp.t.Fatalf("%v in:\n%s", err, data)
	}
	return es
}

// readProcOnce returns the whole of /proc/net/ip_vs from a single read(2),
// and an error if it does not fit in one.
//
// It must be one read. In kernels whose network namespaces share one table
// of virtual servers (the guest's 6.1 among them), a read that goes on
// where the previous one stopped finds its place again by counting only
// this namespace's virtual servers (ip_vs_info_array), while the walk that
// set that place (ip_vs_info_seq_next) counted those of every namespace
// (ip_vs_info_seq_show prints only ours). So with any virtual server in
// another namespace ahead in the table, each further read skips as many of
// ours. Other namespaces do have some: those of earlier tests, which keep
// virtual servers of their own (someone else's, left by Cleanup) until the
// garbage collector closes their Kernel's netlink socket and the kernel
// dismantles the namespace, both at times nothing here controls.
// os.ReadFile reads 512 bytes first, and so lost virtual servers.
//
// One read returns at most what fits in the kernel's seq_file buffer (a
// page at first), far more than any test here programs; a second read
// returning data means it did not fit, which is an error rather than a
// possibly incomplete list.
func readProcOnce(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	n, err := f.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if m, err := f.Read(buf[n:]); m > 0 || !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one read(2) holds (%d bytes, then %d more, %v): a second read may skip entries", path, n, m, err)
	}
	return buf[:n], nil
}

// parseProcIPVS reads the virtual servers of /proc/net/ip_vs, of both
// families (firewall-mark ones are an error: nothing here makes them). The
// persistence timeout there is in jiffies (it depends on CONFIG_HZ), so only
// the word "persistent" is kept.
func parseProcIPVS(data string) ([]ipvsEntry, error) {
	var out []ipvsEntry
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || f[0] == "IP" || f[0] == "Prot" || len(f) > 1 && f[1] == "RemoteAddress:Port":
		case f[0] == "->":
			if len(out) == 0 || len(f) < 6 {
				return nil, fmt.Errorf("bad line %q", line)
			}
			a, err := hexAddrPort(f[1])
			if err != nil {
				return nil, err
			}
			d := ipvsDest{Addr: a, Forward: f[2]}
			d.Weight, _ = strconv.Atoi(f[3])
			d.Active, _ = strconv.Atoi(f[4])
			d.Inactive, _ = strconv.Atoi(f[5])
			out[len(out)-1].Dests = append(out[len(out)-1].Dests, d)
		case len(f) < 3:
			return nil, fmt.Errorf("bad line %q", line)
		default:
			a, err := hexAddrPort(f[1])
			if err != nil {
				return nil, err
			}
			s := f[0] + " " + a + " " + f[2]
			if slices.Contains(f[3:], "persistent") {
				s += " persistent"
			}
			out = append(out, ipvsEntry{Service: s})
		}
	}
	return out, nil
}

var (
	hexAP  = regexp.MustCompile(`^([0-9A-F]{8}):([0-9A-F]{4})$`)
	hexAP6 = regexp.MustCompile(`^\[([0-9a-fA-F]{4}(?::[0-9a-fA-F]{4}){7})\]:([0-9A-F]{4})$`)
)

// hexAddrPort turns /proc/net/ip_vs's "0A60000A:0050" into "10.96.0.10:80",
// and its IPv6 form, "[fd00:0096:0000:0000:0000:0000:0000:0010]:0050"
// (%pI6: every group in full, the port in hex), into "[fd00:96::10]:80".
func hexAddrPort(s string) (string, error) {
	var a netip.Addr
	var hexPort string
	if m := hexAP.FindStringSubmatch(s); m != nil {
		b, _ := hex.DecodeString(m[1])
		a, hexPort = netip.AddrFrom4([4]byte(b)), m[2]
	} else if m := hexAP6.FindStringSubmatch(s); m != nil {
		var err error
		if a, err = netip.ParseAddr(m[1]); err != nil {
			return "", fmt.Errorf("unexpected address %q: %v", s, err)
		}
		hexPort = m[2]
	} else {
		return "", fmt.Errorf("unexpected address %q", s)
	}
	port, _ := strconv.ParseUint(hexPort, 16, 16)
	return netip.AddrPortFrom(a, uint16(port)).String(), nil
}

// find returns the entry of a virtual server, nil if absent.
func find(es []ipvsEntry, prefix string) *ipvsEntry {
	for i := range es {
		if strings.HasPrefix(es[i].Service, prefix) {
			return &es[i]
		}
	}
	return nil
}

// newProxier makes a real Proxier for the host namespace over k. When mod
// sets IPv6, it gets the ip6tables runner, as the mode's constructor does (proxy.Families).
func (tp *topo) newProxier(k Kernel, mod func(*Options)) *Proxier {
	tp.t.Helper()
	ips, err := NewIPSet()
	if err != nil {
		tp.t.Fatal(err)
	}
	opt := Options{Kernel: k, IPSet: ips, Log: slog.New(slog.NewTextHandler(testWriter{tp.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&opt)
	}
	if opt.IPTables == nil {
		tp.in(func() { opt.IPTables, err = iptables.NewRunner(opt.IPv6) })
		if err != nil {
			tp.t.Fatal(err)
		}
	}
	return New(opt)
}

// ipv6 is the Options change of an IPv6 Proxier.
func ipv6(o *Options) { o.IPv6 = true }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// sync runs p.Sync in the host namespace.
func (tp *topo) sync(p *Proxier, st *model.State) error {
	tp.t.Helper()
	var err error
	tp.in(func() { err = p.Sync(context.Background(), st, false) })
	return err
}

// cleanup runs p.Cleanup in the host namespace.
func (tp *topo) cleanup(p *Proxier) error {
	tp.t.Helper()
	var err error
	tp.in(func() { err = p.Cleanup(context.Background()) })
	return err
}

// cmdIn runs a command in the host namespace and returns its output.
func (tp *topo) cmdIn(name string, args ...string) (string, error) {
	var out []byte
	var err error
	tp.in(func() { out, err = exec.Command(name, args...).CombinedOutput() })
	return string(out), err
}

// countingKernel counts the operations that change the kernel.
type countingKernel struct {
	Kernel
	mu  sync.Mutex
	ops []string
}

func (c *countingKernel) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops = append(c.ops, fmt.Sprintf(format, args...))
}

func (c *countingKernel) AddService(s Service) error {
	c.note("AddService %s", s)
	return c.Kernel.AddService(s)
}

func (c *countingKernel) UpdateService(s Service) error {
	c.note("UpdateService %s", s)
	return c.Kernel.UpdateService(s)
}

func (c *countingKernel) DelService(s Service) error {
	c.note("DelService %s", s)
	return c.Kernel.DelService(s)
}

func (c *countingKernel) AddDest(s Service, d Destination) error {
	c.note("AddDest %s %s", s.ServiceKey, d.Addr)
	return c.Kernel.AddDest(s, d)
}

func (c *countingKernel) UpdateDest(s Service, d Destination) error {
	c.note("UpdateDest %s %s %d", s.ServiceKey, d.Addr, d.Weight)
	return c.Kernel.UpdateDest(s, d)
}

func (c *countingKernel) DelDest(s Service, d Destination) error {
	c.note("DelDest %s %s", s.ServiceKey, d.Addr)
	return c.Kernel.DelDest(s, d)
}

func (c *countingKernel) AddAddr(a netip.Addr) error {
	c.note("AddAddr %s", a)
	return c.Kernel.AddAddr(a)
}

func (c *countingKernel) DelAddr(a netip.Addr) error {
	c.note("DelAddr %s", a)
	return c.Kernel.DelAddr(a)
}

func (c *countingKernel) DeleteInterface() error {
	c.note("DeleteInterface")
	return c.Kernel.DeleteInterface()
}

// iptablesSave returns iptables-save of the host namespace without
// comments and counters, to compare rulesets.
func (tp *topo) iptablesSave() string {
	tp.t.Helper()
	return tp.rulesSave("iptables-save")
}

// ip6tablesSave is iptablesSave for IPv6.
func (tp *topo) ip6tablesSave() string {
	tp.t.Helper()
	return tp.rulesSave("ip6tables-save")
}

func (tp *topo) rulesSave(bin string) string {
	tp.t.Helper()
	out, err := tp.cmdIn(bin)
	if err != nil {
		tp.t.Fatalf("%s: %v: %s", bin, err, out)
	}
	var keep []string
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		keep = append(keep, counters.ReplaceAllString(l, "[0:0]"))
	}
	return strings.Join(keep, "\n")
}
