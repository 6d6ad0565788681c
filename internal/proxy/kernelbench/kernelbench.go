//go:build linux

// Package kernelbench holds the benchmarks every mode runs against the real
// kernel, so that `make bench` prints the modes side by side with the same
// load, the same change and the same probes: the first full sync, one
// endpoint change (and the time from its sync's start to the first
// connection that reaches the new endpoints), one new service, the memory a
// full sync needs, and the connect time to a ClusterIP with few and with
// many services programmed.
//
// They program the network namespace they run in: each mode's
// kernel_bench_test.go (build tag kernel) calls them, and `make bench` runs
// those in a throw-away namespace. They measure; they assert nothing about
// time.
package kernelbench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// New makes a backend of the mode under test, with nothing programmed
// yet; it skips the benchmark when the mode cannot run here.
type New func(b *testing.B) proxy.Backend

func synced(b *testing.B, newBackend New, st *model.State) proxy.Backend {
	p := newBackend(b)
	if err := p.Sync(context.Background(), st, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cleanup(b, p) })
	return p
}

func cleanup(b *testing.B, p proxy.Backend) {
	if err := p.Cleanup(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// FullSync is the first sync of the large state. Beside the time it
// reports the memory of the process that ran it, measured on the last
// round with the backend and the state still live: the Go heap after a
// collection (heap-MiB), the peak RSS since just before that round's
// sync (peak-RSS-MiB: the test binary, the state and the backend), and
// the peak RSS of the largest command it ran (tool-RSS-MiB: nft or
// iptables-restore, a separate process), with that round's CPU time in
// those commands, in user space (tool-user-s) and in the kernel
// (tool-sys-s).
func FullSync(b *testing.B, newBackend New) {
	st := Big(Services(b), EndpointsPerService)
	var heap, peak float64
	var toolUser, toolSys time.Duration
	for b.Loop() {
		p := newBackend(b)
		b.StopTimer()
		runtime.GC()
		resetPeakRSS(b)
		u0, s0 := childrenCPU()
		b.StartTimer()
		if err := p.Sync(context.Background(), st, true); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		u1, s1 := childrenCPU()
		toolUser, toolSys = u1-u0, s1-s0
		peak = procStatusMiB(b, "VmHWM")
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap = float64(ms.HeapAlloc) / (1 << 20)
		runtime.KeepAlive(p)
		cleanup(b, p)
		b.StartTimer()
	}
	b.ReportMetric(heap, "heap-MiB")
	b.ReportMetric(peak, "peak-RSS-MiB")
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "tool-RSS-MiB")
	}
	b.ReportMetric(toolUser.Seconds(), "tool-user-s")
	b.ReportMetric(toolSys.Seconds(), "tool-sys-s")
}

// Restart is a restarted daemon's first sync: a new backend's full sync
// of the large state over the rules an earlier one left in the kernel,
// with the peak RSS during it (peak-RSS-MiB, as FullSync's).
func Restart(b *testing.B, newBackend New) {
	st := Big(Services(b), EndpointsPerService)
	synced(b, newBackend, st)
	var peak float64
	for b.Loop() {
		p := newBackend(b)
		b.StopTimer()
		runtime.GC()
		resetPeakRSS(b)
		b.StartTimer()
		if err := p.Sync(context.Background(), st, true); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		peak = procStatusMiB(b, "VmHWM")
		b.StartTimer()
	}
	b.ReportMetric(peak, "peak-RSS-MiB")
}

// childrenCPU is the user and system CPU time of the commands this
// process ran and waited for; a netlink transaction's kernel work counts
// as the system time of the process that sent it.
func childrenCPU() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// OneChange: one service's endpoints change among the large state (a
// partial sync). After the timed changes, reachSamples more (untimed) each
// give the service 10 endpoints it never had and time, from the sync's
// start, the first connect() to its ClusterIP that one of them answers,
// with connects from this namespace starting as soon as Sync returns
// (Sync returns once the kernel holds the change): reach-p50-ms and
// reach-max-ms, beside the same changes' sync-p50-ms, and the connects
// after Sync that an old endpoint still answered (stale-connects, 0 when
// the change is in force as Sync returns).
func OneChange(b *testing.B, newBackend New) {
	srv := serve(b)
	st := Big(Services(b), EndpointsPerService)
	p := synced(b, newBackend, st)
	ctx := context.Background()
	cs := st.Clusters[0]
	const svc = 42
	k := portKey(fmt.Sprintf("svc-%d", svc))
	orig := cs.Ports[k]
	u0, s0 := childrenCPU()
	n := 0
	for b.Loop() {
		np := *orig
		np.Endpoints = append([]model.Endpoint(nil), orig.Endpoints[:1+n%9]...)
		cs.Ports[k] = &np
		if err := p.Sync(ctx, st, false); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportToolCPU(b, u0, s0, n)

	srv.tell.Store(true)
	target := netip.AddrPortFrom(clusterIP(svc), 80)
	var reach, syncs []time.Duration
	stale := 0
	for i := range reachSamples {
		np := *orig
		np.Endpoints = freshEndpoints(i)
		cs.Ports[k] = &np
		start := time.Now()
		if err := p.Sync(ctx, st, false); err != nil {
			b.Fatal(err)
		}
		syncs = append(syncs, time.Since(start))
		for {
			ep, err := Reach(target)
			if err == nil && slices.ContainsFunc(np.Endpoints, func(e model.Endpoint) bool { return e.Addr == ep }) {
				reach = append(reach, time.Since(start))
				break
			}
			if err != nil {
				b.Logf("change %d: %v", i, err)
			}
			stale++
			if time.Since(start) > reachTimeout {
				b.Fatalf("change %d: no connect to %v reached its new endpoints %v in %v (last: %v, %v)", i, target, np.Endpoints, reachTimeout, ep, err)
			}
		}
	}
	runtime.KeepAlive(p)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	slices.Sort(reach)
	slices.Sort(syncs)
	b.ReportMetric(ms(reach[len(reach)/2]), "reach-p50-ms")
	b.ReportMetric(ms(reach[len(reach)-1]), "reach-max-ms")
	b.ReportMetric(ms(syncs[len(syncs)/2]), "sync-p50-ms")
	b.ReportMetric(float64(stale), "stale-connects")
}

// Changes of OneChange whose first connect to the new endpoints is timed,
// and how long one may take before the benchmark fails.
const (
	reachSamples = 50
	reachTimeout = 30 * time.Second
)

// freshEndpoints are the 10 endpoints of OneChange's i-th timed change to
// first connect: addresses in 10.246.i.0/24, which no other endpoint of
// the large state has (setupLocalNet makes them local).
func freshEndpoints(i int) []model.Endpoint {
	var eps []model.Endpoint
	for j := range EndpointsPerService {
		eps = append(eps, model.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 246, byte(i), byte(1 + j)}), 8080)})
	}
	return eps
}

// reportToolCPU reports the CPU time per operation of the commands run
// since u0, s0 (childrenCPU): tool-user-ms and tool-sys-ms.
func reportToolCPU(b *testing.B, u0, s0 time.Duration, n int) {
	u1, s1 := childrenCPU()
	b.ReportMetric(float64((u1-u0)/time.Duration(n))/1e6, "tool-user-ms")
	b.ReportMetric(float64((s1-s0)/time.Duration(n))/1e6, "tool-sys-ms")
}

// AddService: one service appears among the large state.
func AddService(b *testing.B, newBackend New) {
	st := Big(Services(b), EndpointsPerService)
	p := synced(b, newBackend, st)
	ctx := context.Background()
	cs := st.Clusters[0]
	u0, s0 := childrenCPU()
	n := 0
	for b.Loop() {
		k := portKey(fmt.Sprintf("new-%d", n))
		cs.Ports[k] = &model.ServicePort{Key: k, ClusterIP: netip.AddrFrom4([4]byte{10, 100, byte(n >> 8), byte(n)}), Port: 80,
			Endpoints: []model.Endpoint{{Addr: netip.MustParseAddrPort("10.245.0.1:8080")}}}
		if err := p.Sync(ctx, st, false); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportToolCPU(b, u0, s0, n)
}

// Connect-time samples per round (b.Loop iteration), after warmUp
// connects that are not kept.
const (
	samples = 10000
	warmUp  = 1000
)

// FirstPacket is the connect time of a new TCP connection from this
// namespace to a ClusterIP, with 10 services programmed and with the large
// state: the kernel's cost of a connection's first packet through our
// rules (a new conntrack entry walks the nat chains once; in ebpf mode the
// socket hook translates the connect itself). Every endpoint address is
// this namespace's own (10.244.0.0/16 is a local route on lo) and one
// listener on port 8080 answers them all. Before timing, each probed
// service is connected to reachChecks times and each connection must be
// answered by one of that service's endpoints, as the listener tells it,
// so that what is timed is a translated connection. The probes go round
// the services i·n/10 + n/20, so a linear walk (iptables mode's cluster
// chain) is met at every depth. It reports p50-µs, p99-µs and mean-µs of
// the connect call; each connection is then reset (no TIME_WAIT).
func FirstPacket(b *testing.B, newBackend New) {
	srv := serve(b)
	for _, n := range []int{10, Services(b)} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			st := Big(n, EndpointsPerService)
			p := synced(b, newBackend, st)
			var targets []netip.AddrPort
			srv.tell.Store(true)
			for i := 0; i < 10; i++ {
				s := i*n/10 + n/20
				t := netip.AddrPortFrom(clusterIP(s), 80)
				targets = append(targets, t)
				eps := st.Clusters[0].Ports[portKey(fmt.Sprintf("svc-%d", s))].Endpoints
				seen := map[netip.AddrPort]bool{}
				for range reachChecks {
					ep, err := Reach(t)
					if err != nil {
						b.Fatal(err)
					}
					if !slices.ContainsFunc(eps, func(e model.Endpoint) bool { return e.Addr == ep }) {
						b.Fatalf("a connect to %v (svc-%d) was answered by %v, not one of its endpoints", t, s, ep)
					}
					seen[ep] = true
				}
				if len(seen) < 2 {
					b.Fatalf("%d connects to %v (svc-%d) all reached %v, of its %d endpoints", reachChecks, t, s, seen, len(eps))
				}
			}
			srv.tell.Store(false)
			for i := 0; i < warmUp; i++ {
				connect(b, targets[i%len(targets)])
			}
			var d []time.Duration
			for b.Loop() {
				for i := range samples {
					d = append(d, connect(b, targets[i%len(targets)]))
				}
			}
			runtime.KeepAlive(p)
			slices.Sort(d)
			var sum time.Duration
			for _, x := range d {
				sum += x
			}
			us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
			b.ReportMetric(us(d[len(d)/2]), "p50-µs")
			b.ReportMetric(us(d[len(d)*99/100]), "p99-µs")
			b.ReportMetric(us(sum/time.Duration(len(d))), "mean-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// reachChecks is how many connects to each probed service FirstPacket
// checks before timing; with 10 endpoints, all of them answering one
// service's 20 is a chance of 10^-19.
const reachChecks = 20

// server is the one listener on port 8080 of every endpoint address.
// While tell is set it writes each connection the address it was accepted
// on (the endpoint the connection reached) before closing it; otherwise
// it closes it at once.
type server struct {
	tell atomic.Bool
}

// serve makes the endpoint addresses local (setupLocalNet) and starts the
// server, until the benchmark's end.
func serve(b *testing.B) *server {
	setupLocalNet(b)
	ln, err := net.Listen("tcp4", ":8080")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	s := &server{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if s.tell.Load() {
				io.WriteString(c, c.LocalAddr().String()+"\n")
			}
			c.Close()
		}
	}()
	return s
}

// setupLocalNet brings lo up, gives the namespace an address of its own
// (hostAddr), routes the service range to lo from that address (a host
// needs a route to a ClusterIP before the OUTPUT DNAT) and makes local the
// whole endpoint range and that of OneChange's new endpoints. Without an
// address of global scope a connect to a ClusterIP gets the source
// 0.0.0.0: the handshake completes, but what the endpoint sends back is
// routed to 127.0.0.1 and never arrives.
func setupLocalNet(b *testing.B) {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "replace", hostAddr + "/32", "dev", "lo"},
		{"route", "replace", "10.96.0.0/12", "dev", "lo", "src", hostAddr},
		{"route", "replace", "local", "10.244.0.0/16", "dev", "lo"},
		{"route", "replace", "local", "10.246.0.0/16", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

// hostAddr is the benchmark namespace's own address (TEST-NET-1), the
// source of its connections to ClusterIPs.
const hostAddr = "192.0.2.1"

// Reach connects to a and returns the endpoint that answered, as the
// benchmarks' server tells it while its tell is set. The connect and the
// answer time out after 2 s: a connect nothing translates goes nowhere.
func Reach(a netip.AddrPort) (netip.AddrPort, error) {
	c, err := net.DialTimeout("tcp4", a.String(), 2*time.Second)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	// Reset on close, as Connect's: no TIME_WAIT.
	c.(*net.TCPConn).SetLinger(0)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading the endpoint from %v: %w (%q)", a, err, line)
	}
	ep, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%v's answer: %w", a, err)
	}
	return ep, nil
}

// connect times one blocking connect(2) to a, then resets the connection.
func connect(b *testing.B, a netip.AddrPort) time.Duration {
	d, err := Connect(a)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// Connect times one blocking connect(2) to a from the calling thread's
// network namespace, then resets the connection (no TIME_WAIT). The
// kube-proxy comparison (test/bench) times its first packets with it too.
func Connect(a netip.AddrPort) (time.Duration, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	start := time.Now()
	err = syscall.Connect(fd, sa)
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("connect %v: %w", a, err)
	}
	return d, syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
}

// resetPeakRSS sets this process's VmHWM back to its current RSS.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("peak RSS not reset (%v): peak-RSS-MiB is the process's peak so far", err)
	}
}

// procStatusMiB is a kB field of /proc/self/status, in MiB.
func procStatusMiB(b *testing.B, field string) float64 {
	v, err := ProcStatusMiB("self", field)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// ProcStatusMiB is a kB field of /proc/<pid>/status (VmRSS, VmHWM), in
// MiB; pid "self" is this process.
func ProcStatusMiB(pid, field string) (float64, error) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == field+":" {
			kb, err := strconv.ParseFloat(string(f[1]), 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%s/status", field, pid)
}
