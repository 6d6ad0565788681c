//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	// As dnswire: dns is the e2e package's DNS service ports.
	dnswire "github.com/miekg/dns"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/names"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// Bounds of TestDNSFlood: how long it floods, with how many goroutines of
// each kind, and the change latency it allows during the flood (generous:
// the lab machine has two cores, which the flood's senders share with the
// daemon, the apiserver and every other test).
const (
	floodFor        = 10 * time.Second
	floodUDPSenders = 3
	floodTCPHeld    = 80 // over the server's 64
	floodSyncBound  = 5 * time.Second
	// floodQPS is the server's rate in this test (dns.max_qps), below the
	// default so that every machine, the VM's emulated guest too (about
	// 9,000 queries a second), floods past it and the rate's checks are
	// made: at the default of 10,000 the guest's flood was over it in one
	// run and under it in the next.
	floodQPS = 2000
)

// TestDNSFlood floods the daemon's DNS server from the host namespace
// with queries, garbage and TCP connections held open, while endpoint
// changes are made: they reach the rules within the bound, the daemon
// lives, answers no more than its rate, and answers again once the
// flood ends.
func TestDNSFlood(t *testing.T) {
	alpha := theLab.Cluster("alpha").Admin
	cfg := writeConfig(t, "alpha")
	withDNS(t, cfg, fmt.Sprintf("max_qps = %d", floodQPS))
	d := startDaemon(t, cfg)
	ns := namespace(t, alpha, "dnsflood")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
	answeredBy(t, url(vip, 80), 3, "a1")
	name := "web." + ns + ".svc.alpha.internal."
	eventually(t, 30*time.Second, name+" resolving", func() error { return askOnce("udp", name, vip) })

	at := "a1"
	move := func() time.Duration {
		to := map[string]string{"a1": "a2", "a2": "a1"}[at]
		took := changeLatency(t, theLab, alpha, ns, "web", web, url(vip, 80), ip(to), to)
		at = to
		return took
	}
	var base []time.Duration
	for range 2 {
		base = append(base, move())
	}
	t.Logf("change latency before the flood: %v", base)

	before := scrapeHost(t)
	cpu0 := processCPU(t, d.cmd.Process.Pid)
	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()
	f := flood(ctx, theLab)

	var during []time.Duration
	var asked, answered int
	begin := time.Now()
	for ctx.Err() == nil {
		during = append(during, move())
		asked++
		if askOnce("udp", name, vip) == nil {
			answered++
		}
	}
	f.wait()
	took := time.Since(begin)
	cpu := processCPU(t, d.cmd.Process.Pid) - cpu0
	// The queue the kernel kept drains within a second at the rate.
	time.Sleep(time.Second)
	after := scrapeHost(t)

	select {
	case <-d.done:
		t.Fatal("the daemon exited during the flood")
	default:
	}
	var slow []time.Duration
	for _, l := range during {
		if l > floodSyncBound {
			slow = append(slow, l)
		}
	}
	t.Logf("change latency during the flood: %v", during)
	if len(slow) > 0 {
		t.Errorf("%d of %d changes took over %v to reach the rules during the flood: %v", len(slow), len(during), floodSyncBound, slow)
	}
	delta := func(name, labels string) float64 { return after.value(name, labels) - before.value(name, labels) }
	var answers float64
	for _, rc := range names.Rcodes {
		answers += delta("kube_outpost_dns_queries_total", `cluster="alpha",rcode="`+rc+`"`) + delta("kube_outpost_dns_queries_total", `cluster="",rcode="`+rc+`"`)
	}
	overflow, malformed := delta("kube_outpost_dns_dropped_total", `reason="overflow"`), delta("kube_outpost_dns_dropped_total", `reason="malformed"`)
	secs := took.Seconds()
	t.Logf("the flood: %d datagrams sent in %v (%.0f a second: %d queries, %d garbage), %d TCP connections opened; "+
		"the server answered %.0f (%.0f a second), dropped %.0f as overflow, %.0f as malformed, and %d of %d of our own queries during it; "+
		"the daemon used %.2f s of CPU (%.2f cores)",
		f.queries.Load()+f.garbage.Load(), took.Round(time.Millisecond), float64(f.queries.Load()+f.garbage.Load())/secs, f.queries.Load(), f.garbage.Load(),
		f.conns.Load(), answers, answers/secs, overflow, malformed, answered, asked, cpu.Seconds(), cpu.Seconds()/secs)
	// What follows is about a flood past the rate limit. A machine that
	// cannot send one has shown what it can: the syncs above kept their
	// bound.
	if f.queries.Load() < 10*floodQPS {
		t.Skipf("only %d queries sent in %v: this machine cannot flood the server past its rate of %d a second, so the rate's checks are not made",
			f.queries.Load(), took, floodQPS)
	}
	// The drain after the flood adds at most the socket's queue.
	if limit := floodQPS*(secs+1) + floodQPS/10; answers > limit {
		t.Errorf("%.0f queries answered in %v, over the rate's %.0f", answers, took, limit)
	}
	if overflow == 0 {
		t.Error("no query counted as dropped by the kernel, in a flood over the rate")
	}

	for _, network := range []string{"udp", "tcp"} {
		eventually(t, 10*time.Second, name+" over "+network+" after the flood", func() error { return askOnce(network, name, vip) })
	}
	if l := move(); l > floodSyncBound {
		t.Errorf("a change after the flood took %v", l)
	}
}

// flooding is a flood under way; wait returns once every goroutine ended.
type flooding struct {
	wg                      sync.WaitGroup
	queries, garbage, conns atomic.Int64
}

func (f *flooding) wait() { f.wg.Wait() }

// flood sends to the daemon's DNS listener until ctx ends: queries as
// fast as floodUDPSenders goroutines write them (names that exist, that do
// not, outside the zones, reverse), garbage (random bytes, replies,
// compression loops, names too long), and floodTCPHeld TCP connections
// that send one byte of a length and hold on until the server hangs up.
func flood(ctx context.Context, l *lab.Lab) *flooding {
	f := &flooding{}
	var queries [][]byte
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.nope.svc.alpha.internal.", dnswire.TypeA},
		{"_http._tcp.kubernetes.default.svc.alpha.internal.", dnswire.TypeSRV},
		{"kubernetes.default.svc.cluster.local.", dnswire.TypeA},
		{"example.com.", dnswire.TypeA},
		{"1.0.96.10.in-addr.arpa.", dnswire.TypePTR},
	} {
		m := new(dnswire.Msg)
		m.SetQuestion(q.name, q.qtype)
		b, _ := m.Pack()
		queries = append(queries, b)
	}
	for i := range floodUDPSenders {
		f.wg.Go(func() {
			c, err := l.DialHost(ctx, "udp", dnsListen)
			if err != nil {
				return
			}
			defer c.Close()
			for n := i; ctx.Err() == nil; n++ {
				// Refused writes (ICMP from an earlier datagram) are
				// still a flood: go on.
				if _, err := c.Write(queries[n%len(queries)]); err == nil {
					f.queries.Add(1)
				}
			}
		})
	}
	f.wg.Go(func() {
		c, err := l.DialHost(ctx, "udp", dnsListen)
		if err != nil {
			return
		}
		defer c.Close()
		loop := append(dnsHeader(1), 0xc0, 12, 0, 1, 0, 1)
		long := dnsHeader(1)
		for range 5 {
			long = append(long, 63)
			long = append(long, []byte(strings.Repeat("x", 63))...)
		}
		long = append(long, 0, 0, 1, 0, 1)
		reply := append([]byte(nil), queries[0]...)
		reply[2] |= 0x80
		buf := make([]byte, 1500)
		for n := 0; ctx.Err() == nil; n++ {
			b := [][]byte{loop, long, reply, buf[:n%13]}[n%4]
			if n%8 == 7 {
				for i := range buf {
					buf[i] = byte(rand.Uint32())
				}
				b = buf[:rand.IntN(len(buf))]
			}
			if _, err := c.Write(b); err == nil {
				f.garbage.Add(1)
			}
		}
	})
	for range floodTCPHeld {
		f.wg.Go(func() {
			for ctx.Err() == nil {
				c, err := l.DialHost(ctx, "tcp", dnsListen)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				f.conns.Add(1)
				c.Write([]byte{0})
				deadline, _ := ctx.Deadline()
				c.SetReadDeadline(deadline)
				c.Read(make([]byte, 1))
				c.Close()
			}
		})
	}
	return f
}

// dnsHeader is a query's header with qd questions and nothing else.
func dnsHeader(qd uint16) []byte {
	return []byte{0xbe, 0xef, 0x01, 0x00, byte(qd >> 8), byte(qd), 0, 0, 0, 0, 0, 0}
}

// askOnce asks the daemon's server for name's A record, once, over
// network, and wants want alone.
func askOnce(network, name string, want netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := theLab.DialHost(ctx, network, dnsListen)
	if err != nil {
		return err
	}
	conn := &dnswire.Conn{Conn: c}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	q := new(dnswire.Msg)
	q.SetQuestion(name, dnswire.TypeA)
	if err := conn.WriteMsg(q); err != nil {
		return err
	}
	m, err := conn.ReadMsg()
	if err != nil {
		return err
	}
	if m.Rcode != dnswire.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*dnswire.A).A.String() != want.String() {
		return fmt.Errorf("%s over %s: %v", name, network, m)
	}
	return nil
}

// changeLatency gives svc's EndpointSlice the one endpoint addr and
// returns the time from the write to the first connection to u that the
// new endpoint answers (with body); 20 s when none does by then.
func changeLatency(t *testing.T, l *lab.Lab, c kubernetes.Interface, ns, svc string, ports []port, u, addr, body string) time.Duration {
	t.Helper()
	const limit = 20 * time.Second
	start := time.Now()
	slice(t, c, ns, svc, "1", ports, []ep{readyEP(addr)})
	for time.Since(start) < limit {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, _ := l.HTTPGet(ctx, u)
		cancel()
		if got == body {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return limit
}

// processCPU is the CPU time, user and system, process pid has used.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's name, which may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data)[i+1:])
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatal(errors.Join(fmt.Errorf("/proc/%d/stat", pid), err))
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(ticks) * 10 * time.Millisecond
}
