//go:build ipvskernel && linux

package ipvs

// Real-kernel tests. They need root and a kernel with ip_vs, so they run in
// the VM of test/vm (a Debian kernel), not on the development machine:
//
//	go test -tags ipvskernel -count=1 -v -run '^TestKernel' ./internal/proxy/ipvs/
//
// or, to copy a binary in: go test -c -tags ipvskernel -o ipvs.test
// ./internal/proxy/ipvs/ && ./ipvs.test -test.run '^TestKernel' -test.v
//
// They skip when ip_vs is absent and cannot be loaded, and fail when a tool
// is missing (iproute2, ipset, iptables). Each builds its own network
// namespaces (kernel_topo_test.go): the machine's own IPVS, addresses and
// rules are never the target. IPv6 and dual-stack: kernel_ipv6_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

const (
	vipWeb    = "10.96.0.10" // TCP 80 and UDP 53
	vipEmpty  = "10.96.0.11" // a service without endpoints
	vipSticky = "10.96.0.12" // ClientIP affinity
)

// kernelState is one cluster whose web service (TCP and UDP) has the
// endpoints of webPods.
func kernelState(tp *topo, webPods ...string) *model.State {
	return state(cluster("k", true, []string{"10.96.0.0/16"}, kernelPorts(tp, false, webPods...)...))
}

// kernelPorts are the service ports of kernelState, of one family: the web
// service (TCP 80, UDP 53) with the endpoints of webPods, the service
// without endpoints, the sticky one over both pods.
func kernelPorts(tp *topo, v6 bool, webPods ...string) []*model.ServicePort {
	pods, web, empty, sticky := tp.pods, vipWeb, vipEmpty, vipSticky
	if v6 {
		pods, web, empty, sticky = tp.pods6, vip6Web, vip6Empty, vip6Sticky
	}
	ep := func(pod string, port uint16) string { return netip.AddrPortFrom(pods[pod], port).String() }
	var tcpEps, udpEps, all []string
	for _, p := range webPods {
		tcpEps = append(tcpEps, ep(p, 8080))
		udpEps = append(udpEps, ep(p, 5353))
	}
	for _, p := range []string{"pod1", "pod2"} {
		all = append(all, ep(p, 8080))
	}
	return []*model.ServicePort{
		svc("k", "default", "web", "http", model.TCP, web, 80, tcpEps...),
		svc("k", "default", "web", "dns", model.UDP, web, 53, udpEps...),
		svc("k", "default", "empty", "", model.TCP, empty, 80),
		withAffinity(svc("k", "default", "sticky", "", model.TCP, sticky, 80, all...), time.Hour),
	}
}

// kernelStateIPVS is /proc/net/ip_vs (ipvsText, without counts) once
// kernelState(tp, "pod1", "pod2") is programmed.
const kernelStateIPVS = `TCP 10.96.0.10:80 rr
  -> 10.250.0.11:8080 Masq 1
  -> 10.250.0.12:8080 Masq 1
TCP 10.96.0.12:80 rr persistent
  -> 10.250.0.11:8080 Masq 1
  -> 10.250.0.12:8080 Masq 1
UDP 10.96.0.10:53 rr
  -> 10.250.0.11:5353 Masq 1
  -> 10.250.0.12:5353 Masq 1`

// ipvsText is a readable, sorted form of /proc/net/ip_vs; counts only when
// asked, since they move with traffic.
func ipvsText(es []ipvsEntry, counts bool) string {
	var svcs []string
	for _, e := range es {
		lines := []string{e.Service}
		var ds []string
		for _, d := range e.Dests {
			l := fmt.Sprintf("  -> %s %s %d", d.Addr, d.Forward, d.Weight)
			if counts {
				l += fmt.Sprintf(" active %d inactive %d", d.Active, d.Inactive)
			}
			ds = append(ds, l)
		}
		slices.Sort(ds)
		svcs = append(svcs, strings.Join(append(lines, ds...), "\n"))
	}
	slices.Sort(svcs)
	return strings.Join(svcs, "\n")
}

func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: got %v, want connection refused", what, err)
	}
}

func TestParseProcIPVS(t *testing.T) {
	// As Linux 6.1 prints it (the service lines end with a space; IPv6
	// addresses in full, "%pI6", the ports in hex).
	data := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A60000A:0050 rr 
  -> 0AFA000C:1F90      Masq    1      0          0         
  -> 0AFA000B:1F90      Masq    0      1          2         
TCP  0A60000C:0050 rr persistent 900000 FFFFFFFF
  -> 0AFA000B:1F90      Masq    1      0          0         
UDP  0A60000A:0035 rr 
TCP  [fd00:0096:0000:0000:0000:0000:0000:0010]:0050 rr 
  -> [fd00:0250:0000:0000:0000:0000:0000:0012]:1F90      Masq    1      3          0         
  -> [fd00:0250:0000:0000:0000:0000:0000:0011]:1F90      Masq    1      0          0         
TCP  [fd00:0096:0000:0000:0000:0000:0000:0012]:0050 rr persistent 900000 80000000
  -> [fd00:0250:0000:0000:0000:0000:0000:0011]:1F90      Masq    1      0          0         
UDP  [fd00:0096:0000:0000:0000:0000:0000:0010]:0035 rr 
  -> [fd00:0250:0000:0000:0000:0000:0000:0011]:14E9      Masq    1      0          1         
`
	es, err := parseProcIPVS(data)
	if err != nil {
		t.Fatal(err)
	}
	want := `TCP 10.96.0.10:80 rr
  -> 10.250.0.11:8080 Masq 0 active 1 inactive 2
  -> 10.250.0.12:8080 Masq 1 active 0 inactive 0
TCP 10.96.0.12:80 rr persistent
  -> 10.250.0.11:8080 Masq 1 active 0 inactive 0
TCP [fd00:96::10]:80 rr
  -> [fd00:250::11]:8080 Masq 1 active 0 inactive 0
  -> [fd00:250::12]:8080 Masq 1 active 3 inactive 0
TCP [fd00:96::12]:80 rr persistent
  -> [fd00:250::11]:8080 Masq 1 active 0 inactive 0
UDP 10.96.0.10:53 rr
UDP [fd00:96::10]:53 rr
  -> [fd00:250::11]:5353 Masq 1 active 0 inactive 1`
	if got := ipvsText(es, true); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	for _, bad := range []string{
		"TCP  [fd00:96::10]:0050 rr \n",                           // not as the kernel prints it
		"TCP  [fd00:0096:0000:0000:0000:0000:0000:0010]:80 rr \n", // decimal port
		"FWM  00000001 rr \n",                                     // firewall mark: never ours
	} {
		if es, err := parseProcIPVS(bad); err == nil {
			t.Errorf("parseProcIPVS(%q) = %+v, want an error", bad, es)
		}
	}
}

// TestKernelReadIPVSOtherNamespaces checks readIPVS while another
// namespace has virtual servers, as the tests meet them: earlier tests'
// namespaces keep theirs until the kernel dismantles the namespace, once
// the garbage collector has closed their Kernel's netlink socket (see
// readProcOnce). readIPVS must see every virtual server of its namespace,
// as netlink lists them, and none of the other's. What a reader in 512-byte
// pieces (os.ReadFile) sees is logged: the guest's 6.1 loses some of ours.
func TestKernelReadIPVSOtherNamespaces(t *testing.T) {
	requireIPVS(t)
	seq := topoSeq.Add(1)
	tp := &topo{t: t, host: fmt.Sprintf("koipvs%dx%d-host", os.Getpid(), seq)}
	other := fmt.Sprintf("koipvs%dx%d-other", os.Getpid(), seq)
	addNS(t, tp.host)
	addNS(t, other)
	// The last byte of a VIP picks its bucket in the kernel's table: both
	// namespaces' virtual servers are spread over all of it, interleaved.
	const n = 20
	add := func(ns string, net3 [3]byte, count, step int) {
		k := NewKernel() // its netlink socket opens in ns, on first use
		var svcs []Service
		for i := range count {
			vip := netip.AddrFrom4([4]byte{net3[0], net3[1], net3[2], byte(1 + i*step)})
			svcs = append(svcs, Service{ServiceKey: ServiceKey{VIP: vip, Port: 80, Protocol: model.TCP}, Scheduler: "rr"})
		}
		inNS(t, ns, func() {
			for _, s := range svcs {
				if err := k.AddService(s); err != nil {
					t.Fatal(err)
				}
				if err := k.AddDest(s, Destination{Addr: netip.MustParseAddrPort("10.250.0.11:8080"), Weight: 1}); err != nil {
					t.Fatal(err)
				}
			}
		})
		t.Cleanup(func() {
			inNS(t, ns, func() {
				for _, s := range svcs {
					_ = k.DelService(s)
				}
			})
		})
	}
	add(other, [3]byte{10, 200, 1}, 50, 5)
	add(tp.host, [3]byte{10, 96, 1}, n, 12)

	var listed []VirtualServer
	var err error
	tp.in(func() { listed, err = NewKernel().List() })
	if err != nil || len(listed) != n {
		t.Fatalf("netlink lists %d virtual servers (%v), want %d", len(listed), err, n)
	}
	es := tp.readIPVS()
	if len(es) != n {
		t.Errorf("readIPVS: %d virtual servers, want %d:\n%s", len(es), n, ipvsText(es, false))
	}
	for _, e := range es {
		if !strings.HasPrefix(e.Service, "TCP 10.96.1.") || len(e.Dests) != 1 {
			t.Errorf("readIPVS: %s with %d destinations: not one of ours", e.Service, len(e.Dests))
		}
	}

	var data []byte
	tp.in(func() { data, err = readInPieces("/proc/thread-self/net/ip_vs", 512) })
	if err != nil {
		t.Fatal(err)
	}
	pieces, err := parseProcIPVS(string(data))
	t.Logf("read in 512-byte pieces instead, /proc/net/ip_vs shows %d of our %d virtual servers (%v)", len(pieces), n, err)
}

// readInPieces reads a file to its end, size bytes per read(2).
func readInPieces(path string, size int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var data []byte
	buf := make([]byte, size)
	for {
		n, err := f.Read(buf)
		data = append(data, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func TestKernelInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run inside the VM of test/vm")
	}
	ns := fmt.Sprintf("koipvs%dx%d-if", os.Getpid(), topoSeq.Add(1))
	addNS(t, ns)
	k := NewKernel()
	v4, v6 := netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("fd00:96::1")
	inNS(t, ns, func() {
		if err := k.EnsureInterface(); err != nil {
			t.Skipf("cannot create a dummy interface here: %v", err)
		}
		for _, err := range []error{k.EnsureInterface(), k.AddAddr(v4), k.AddAddr(v4), k.AddAddr(v6)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		addrs, err := k.InterfaceAddrs()
		if err != nil || !slices.Equal(addrs, []netip.Addr{v4, v6}) {
			t.Errorf("InterfaceAddrs: %v, %v", addrs, err)
		}
	})
	out := run(t, "ip", "-n", ns, "-o", "addr", "show", "dev", Interface)
	// IPv6: Linux ignores the scope asked for and derives it from the
	// address (ipv6_addr_scope: global for fd00::/8), so the Debian 6.1
	// kernel of test/vm lists "scope global nodad"; only IPv4 keeps host.
	for _, want := range []string{"inet 10.96.0.1/32 scope host", "inet6 fd00:96::1/128 "} {
		if !strings.Contains(out, want) {
			t.Errorf("ip addr: no %q in:\n%s", want, out)
		}
	}
	// Down, as kube-ipvs0, yet the address is local.
	if out := run(t, "ip", "-n", ns, "link", "show", Interface); !strings.Contains(out, "state DOWN") {
		t.Errorf("outpost0 is not down:\n%s", out)
	}
	if out := run(t, "ip", "-n", ns, "route", "show", "table", "local"); !strings.Contains(out, "local 10.96.0.1 dev outpost0") {
		t.Errorf("no local route for 10.96.0.1:\n%s", out)
	}
	inNS(t, ns, func() {
		for _, err := range []error{k.DelAddr(v4), k.DelAddr(v4), k.DeleteInterface(), k.DeleteInterface(), k.DelAddr(v6)} {
			if err != nil {
				t.Error(err)
			}
		}
		if addrs, err := k.InterfaceAddrs(); err != nil || len(addrs) != 0 {
			t.Errorf("after DeleteInterface: %v, %v", addrs, err)
		}
	})
	// An outpost0 that is not ours is refused, not adopted.
	run(t, "ip", "-n", ns, "link", "add", Interface, "type", "veth", "peer", "name", "other")
	inNS(t, ns, func() {
		if err := k.EnsureInterface(); err == nil || !strings.Contains(err.Error(), "veth") {
			t.Errorf("EnsureInterface over a veth: %v", err)
		}
	})
}

func TestKernelBalancesAndRefuses(t *testing.T) {
	requireIPVS(t)
	tp := newTopo(t)
	p := tp.newProxier(NewKernel(), nil)
	if err := tp.sync(p, kernelState(tp, "pod1", "pod2")); err != nil {
		t.Fatal(err)
	}

	// Round robin over both pods, TCP and UDP, each reply masqueraded.
	if seen := tp.podsAnswering(10, tp.askTCP, vipWeb+":80"); seen["pod1"] == 0 || seen["pod2"] == 0 {
		t.Errorf("TCP answers: %v, want both pods", seen)
	}
	if seen := tp.podsAnswering(10, tp.askUDP, vipWeb+":53"); seen["pod1"] == 0 || seen["pod2"] == 0 {
		t.Errorf("UDP answers: %v, want both pods", seen)
	}
	// ClientIP affinity: one pod for every connection.
	if seen := tp.podsAnswering(8, tp.askTCP, vipSticky+":80"); len(seen) != 1 {
		t.Errorf("sticky answers: %v, want one pod", seen)
	}

	if got := ipvsText(tp.readIPVS(), false); got != kernelStateIPVS {
		t.Errorf("/proc/net/ip_vs:\n%s\nwant:\n%s", got, kernelStateIPVS)
	}

	// The persistence timeout, in seconds through netlink.
	tp.in(func() {
		vss, err := NewKernel().List()
		if err != nil {
			t.Fatal(err)
		}
		for _, vs := range vss {
			if vs.VIP.String() == vipSticky && (!vs.Persistent || vs.Timeout != 3600) {
				t.Errorf("sticky virtual server: %+v, want persistent 3600", vs.Service)
			}
		}
	})

	// A service without endpoints is refused.
	_, err := tp.dialTCP(vipEmpty + ":80")
	wantRefused(t, "service without endpoints", err)

	// A port of a VIP that is no service is refused, even though this host
	// listens on it on every address.
	ln, pc := hostListeners(t, tp, false)
	defer ln.Close()
	defer pc.Close()
	if _, err := tp.askTCP("127.0.0.1:2222"); err != nil {
		t.Fatalf("the host's own listener does not answer: %v", err)
	}
	if _, err := tp.askUDP("127.0.0.1:5555"); err != nil {
		t.Fatalf("the host's own UDP listener does not answer: %v", err)
	}
	for _, vip := range []string{vipWeb, vipEmpty, vipSticky} {
		_, err := tp.dialTCP(vip + ":2222")
		wantRefused(t, "TCP to "+vip+":2222", err)
		_, err = tp.askUDP(vip + ":5555")
		wantRefused(t, "UDP to "+vip+":5555", err)
	}
}

// hostListeners listen in the host namespace on every address of one
// family, TCP 2222 and UDP 5555, answering as the pods do, as "host".
func hostListeners(t *testing.T, tp *topo, v6 bool) (net.Listener, net.PacketConn) {
	f := "4"
	if v6 {
		f = "6"
	}
	var ln net.Listener
	var pc net.PacketConn
	tp.in(func() {
		var err error
		if ln, err = net.Listen("tcp"+f, ":2222"); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp"+f, ":5555"); err != nil {
			t.Fatal(err)
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				if _, err := c.Read(buf); err == nil {
					fmt.Fprintf(c, "host %s\n", c.RemoteAddr())
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte("host "+addr.String()+"\n"), addr)
		}
	}()
	return ln, pc
}

func TestKernelGracefulTermination(t *testing.T) {
	requireIPVS(t)
	tp := newTopo(t)
	// Short IPVS timeouts for connections that end (the reset state takes
	// 10 s, which is not settable).
	tp.in(func() {
		h, err := mobyipvs.New("")
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if err := h.SetConfig(&mobyipvs.Config{TimeoutTCPFin: 2 * time.Second, TimeoutUDP: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
	})
	p := tp.newProxier(NewKernel(), nil)
	if err := tp.sync(p, kernelState(tp, "pod1", "pod2")); err != nil {
		t.Fatal(err)
	}
	c, err := tp.dialTCP(vipWeb + ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.abort()
	a, err := c.ask()
	if err != nil {
		t.Fatal(err)
	}
	leaving, staying := a.pod, map[string]string{"pod1": "pod2", "pod2": "pod1"}[a.pod]
	leavingTCP := tp.pods[leaving].String() + ":8080"
	leavingUDP := tp.pods[leaving].String() + ":5353"
	t.Logf("open connection on %s; removing it", leaving)

	// The endpoint goes: weight 0 for TCP, gone at once for UDP.
	if err := tp.sync(p, kernelState(tp, staying)); err != nil {
		t.Fatal(err)
	}
	dest := func(svc, addr string) *ipvsDest {
		e := find(tp.readIPVS(), svc)
		if e == nil {
			t.Fatalf("no virtual server %s:\n%s", svc, ipvsText(tp.readIPVS(), true))
		}
		for i := range e.Dests {
			if e.Dests[i].Addr == addr {
				return &e.Dests[i]
			}
		}
		return nil
	}
	if d := dest("TCP 10.96.0.10:80 ", leavingTCP); d == nil || d.Weight != 0 || d.Active == 0 {
		t.Fatalf("draining destination: %+v\n%s", d, ipvsText(tp.readIPVS(), true))
	}
	if d := dest("UDP 10.96.0.10:53 ", leavingUDP); d != nil {
		t.Errorf("UDP destination not deleted at once: %+v", d)
	}

	// The open connection goes on; new ones go to the other pod.
	if a, err := c.ask(); err != nil || a.pod != leaving {
		t.Errorf("open connection after its endpoint left: %+v, %v", a, err)
	}
	if seen := tp.podsAnswering(6, tp.askTCP, vipWeb+":80"); seen[leaving] != 0 {
		t.Errorf("new connections: %v, want only %s", seen, staying)
	}

	// While the connection lasts, syncs keep the destination.
	if err := tp.sync(p, kernelState(tp, staying)); err != nil {
		t.Fatal(err)
	}
	if dest("TCP 10.96.0.10:80 ", leavingTCP) == nil {
		t.Fatalf("destination deleted while its connection is open")
	}

	// Once it is gone (the reset state expires in 10 s), the next sync
	// deletes the destination.
	c.abort()
	deadline := time.Now().Add(45 * time.Second)
	for dest("TCP 10.96.0.10:80 ", leavingTCP) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("destination still there 45 s after its last connection:\n%s", ipvsText(tp.readIPVS(), true))
		}
		time.Sleep(time.Second)
		if err := tp.sync(p, kernelState(tp, staying)); err != nil {
			t.Fatal(err)
		}
	}

	// GracefulTimeout: deleted with its connection still open.
	p = tp.newProxier(NewKernel(), func(o *Options) { o.GracefulTimeout = 2 * time.Second })
	if err := tp.sync(p, kernelState(tp, "pod1", "pod2")); err != nil {
		t.Fatal(err)
	}
	c2, err := tp.dialTCP(vipWeb + ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.abort()
	a, err = c2.ask()
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"pod1": "pod2", "pod2": "pod1"}[a.pod]
	addr := tp.pods[a.pod].String() + ":8080"
	if err := tp.sync(p, kernelState(tp, other)); err != nil {
		t.Fatal(err)
	}
	if d := dest("TCP 10.96.0.10:80 ", addr); d == nil || d.Weight != 0 {
		t.Fatalf("not draining: %+v", d)
	}
	time.Sleep(2500 * time.Millisecond)
	if err := tp.sync(p, kernelState(tp, other)); err != nil {
		t.Fatal(err)
	}
	if d := dest("TCP 10.96.0.10:80 ", addr); d != nil {
		t.Errorf("still there after GracefulTimeout: %+v", d)
	}
	// expire_nodest_conn=1: the connection is dropped at its next packet.
	_, err = c2.ask()
	t.Logf("connection to the deleted destination: %v", err)
}

func TestKernelRestartChangesNothing(t *testing.T) {
	requireIPVS(t)
	tp := newTopo(t)
	st := kernelState(tp, "pod1", "pod2")
	p := tp.newProxier(NewKernel(), nil)
	if err := tp.sync(p, st); err != nil {
		t.Fatal(err)
	}
	c, err := tp.dialTCP(vipWeb + ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.abort()
	a, err := c.ask()
	if err != nil {
		t.Fatal(err)
	}
	// A restarted daemon: a new Proxier over a fresh Kernel.
	tp.restartChangesNothing(t, st, nil, false, c, a)
}

// setMembers lists our sets of one family and their members, sorted.
func (tp *topo) setMembers(v6 bool) string {
	tp.t.Helper()
	var out []string
	vips, ports := ourSets(v6)
	for _, name := range []string{vips.name, ports.name} {
		text, err := tp.cmdIn("ipset", "list", name)
		if err != nil {
			tp.t.Fatalf("ipset list %s: %v: %s", name, err, text)
		}
		_, members, _ := strings.Cut(text, "Members:\n")
		m := strings.Fields(members)
		slices.Sort(m)
		out = append(out, name+": "+strings.Join(m, " "))
	}
	return strings.Join(out, "\n")
}

func TestKernelCleanup(t *testing.T) {
	requireIPVS(t)
	tp := newTopo(t)
	tp.in(func() {
		r, err := iptables.NewRunner(false)
		if err == nil {
			err = r.Restore(context.Background(), []byte(foreignRules))
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	rulesBefore := tp.iptablesSave()

	k := NewKernel()
	p := tp.newProxier(k, nil)
	if err := tp.sync(p, kernelState(tp, "pod1", "pod2")); err != nil {
		t.Fatal(err)
	}
	// Someone else's virtual server, on an address that is not on
	// outpost0.
	foreign := Service{ServiceKey: ServiceKey{VIP: netip.MustParseAddr("10.200.0.1"), Port: 80, Protocol: model.TCP}, Scheduler: "rr"}
	tp.in(func() {
		if err := k.AddService(foreign); err != nil {
			t.Fatal(err)
		}
		if err := k.AddDest(foreign, Destination{Addr: netip.MustParseAddrPort("10.250.0.11:8080"), Weight: 1}); err != nil {
			t.Fatal(err)
		}
	})

	for range 2 { // the second finds nothing to do
		if err := tp.cleanup(p); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := ipvsText(tp.readIPVS(), false), "TCP 10.200.0.1:80 rr\n  -> 10.250.0.11:8080 Masq 1"; got != want {
		t.Errorf("IPVS after Cleanup:\n%s\nwant:\n%s", got, want)
	}
	if got := tp.iptablesSave(); got != rulesBefore {
		t.Errorf("iptables after Cleanup:\n%s\nwant:\n%s", got, rulesBefore)
	}
	if out, err := tp.cmdIn("ipset", "list", "-n"); err != nil || strings.Contains(out, setPrefix) {
		t.Errorf("ipsets after Cleanup: %v\n%s", err, out)
	}
	if out, err := tp.cmdIn("ip", "link", "show", Interface); err == nil {
		t.Errorf("outpost0 still exists:\n%s", out)
	}
}

// restartChangesNothing starts a new Proxier of one family over a fresh
// Kernel, as a restarted daemon would, syncs st twice and checks that no
// kernel operation ran, that IPVS, the family's rules and our sets are as
// before, and that the open connection c is still on the pod of answer a.
func (tp *topo) restartChangesNothing(t *testing.T, st *model.State, mod func(*Options), v6 bool, c *tcpConn, a answer) {
	t.Helper()
	rules := tp.iptablesSave
	if v6 {
		rules = tp.ip6tablesSave
	}
	ipvsBefore, rulesBefore, setsBefore := ipvsText(tp.readIPVS(), false), rules(), tp.setMembers(v6)
	ck := &countingKernel{Kernel: NewKernel()}
	p := tp.newProxier(ck, mod)
	for range 2 {
		if err := tp.sync(p, st); err != nil {
			t.Fatal(err)
		}
	}
	if len(ck.ops) != 0 {
		t.Errorf("a restart changed the kernel: %q", ck.ops)
	}
	if got := ipvsText(tp.readIPVS(), false); got != ipvsBefore {
		t.Errorf("IPVS after restart:\n%s\nwant:\n%s", got, ipvsBefore)
	}
	if got := rules(); got != rulesBefore {
		t.Errorf("rules after restart:\n%s\nwant:\n%s", got, rulesBefore)
	}
	if got := tp.setMembers(v6); got != setsBefore {
		t.Errorf("ipsets after restart:\n%s\nwant:\n%s", got, setsBefore)
	}
	if b, err := c.ask(); err != nil || b.pod != a.pod {
		t.Errorf("open connection after restart: %+v, %v (was on %s)", b, err, a.pod)
	}
}
