//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// staleUDPWithin is how soon after an EndpointSlice or Service write an
// ongoing UDP flow must follow it (issue 13, guarantee 8).
const staleUDPWithin = time.Second

// udpFlow is one UDP socket that sends a datagram every 10 ms, keeping one
// conntrack flow as a resolver or a syslog sender does, and records what
// comes back. A socket the kernel disconnects (ebpf mode destroys a
// connected socket whose endpoint left its service: its send fails with
// EDESTADDRREQ, a read waiting on it with ECONNABORTED) is replaced by a
// new one, connected again, as such a sender does on that error; no
// other mode ever disconnects one.
type udpFlow struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	addr string
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	conn   net.Conn // nil while connecting again is refused
	events []flowEvent
	// redials counts the sockets connected again after a disconnection.
	redials int
}

// flowEvent is an answer (from: the pod's name) or a refusal: a send that
// failed (a local sender's EPERM from a REJECT rule, or in ipvs mode from
// the drop of the first datagram of a flow whose real server was deleted,
// expire_nodest_conn=1) or an ICMP error read back (ECONNREFUSED). Silence
// records nothing.
type flowEvent struct {
	at      time.Time
	from    string
	refused bool
}

// startFlow opens a flow to addr with dial and sends until the test ends.
func startFlow(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) *udpFlow {
	t.Helper()
	conn, err := dial(context.Background(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &udpFlow{dial: dial, addr: addr, conn: conn, stop: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		f.read(conn)
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			c := f.current()
			if c == nil {
				c = f.reconnect()
				if c == nil {
					continue
				}
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				if disconnected(err) {
					f.drop(c)
					continue
				}
				f.record(flowEvent{at: time.Now(), refused: refusal(err)})
			}
		}
	}()
	t.Cleanup(f.close)
	return f
}

// read records what comes back on c until c is closed.
func (f *udpFlow) read(c net.Conn) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			select {
			case <-f.stop:
				return
			default:
			}
			switch {
			case err == nil:
				f.record(flowEvent{at: time.Now(), from: strings.TrimSpace(string(buf[:n]))})
			case errors.Is(err, net.ErrClosed):
				return // replaced, or the flow's end
			case refusal(err):
				f.record(flowEvent{at: time.Now(), refused: true})
			default:
				// Another error (a disconnection: the sender
				// replaces the socket): keep reading.
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
}

func (f *udpFlow) current() net.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conn
}

// drop closes c, a socket the kernel disconnected, for the next send to
// connect a new one.
func (f *udpFlow) drop(c net.Conn) {
	f.mu.Lock()
	if f.conn == c {
		f.conn = nil
	}
	f.mu.Unlock()
	c.Close()
}

// reconnect connects a new socket: nil when connect() itself is refused
// (ebpf mode refuses a service without endpoints there), which counts as
// a refusal.
func (f *udpFlow) reconnect() net.Conn {
	c, err := f.dial(context.Background(), "udp", f.addr)
	if err != nil {
		f.record(flowEvent{at: time.Now(), refused: refusal(err)})
		return nil
	}
	f.mu.Lock()
	select {
	case <-f.stop:
		f.mu.Unlock()
		c.Close()
		return nil
	default:
	}
	f.conn = c
	f.redials++
	f.mu.Unlock()
	f.read(c)
	return c
}

func refusal(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ECONNREFUSED)
}

// disconnected says the kernel disconnected the socket under the flow.
func disconnected(err error) bool {
	return errors.Is(err, syscall.EDESTADDRREQ) || errors.Is(err, syscall.ECONNABORTED)
}

func (f *udpFlow) record(e flowEvent) {
	if e.from == "" && !e.refused {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *udpFlow) close() {
	f.mu.Lock()
	select {
	case <-f.stop:
		f.mu.Unlock()
		return
	default:
	}
	close(f.stop)
	if f.conn != nil {
		f.conn.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// reconnects is how many times the flow connected a new socket since it
// began, the kernel having disconnected the last.
func (f *udpFlow) reconnects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.redials
}

// since returns the events from t on.
func (f *udpFlow) since(t time.Time) []flowEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, _ := slices.BinarySearchFunc(f.events, t, func(e flowEvent, t time.Time) int { return e.at.Compare(t) })
	return slices.Clone(f.events[i:])
}

// first waits up to 10 s for the first event from begin on that match
// says is the one, and returns how long after begin it came.
func (f *udpFlow) first(t *testing.T, what string, begin time.Time, match func(flowEvent) bool) time.Duration {
	t.Helper()
	var took time.Duration
	eventually(t, 10*time.Second, what, func() error {
		for _, e := range f.since(begin) {
			if match(e) {
				took = e.at.Sub(begin)
				return nil
			}
		}
		return fmt.Errorf("not yet; since then: %s", summary(f.since(begin)))
	})
	return took
}

// lastFrom returns how long after begin the last answer from pod came,
// 0 if none did.
func (f *udpFlow) lastFrom(begin time.Time, pod string) time.Duration {
	var last time.Duration
	for _, e := range f.since(begin) {
		if e.from == pod {
			last = e.at.Sub(begin)
		}
	}
	return last
}

// kept checks that every answer the flow got from begin on came from one
// endpoint, with none missing for more than a second, and that it is
// still answered.
func (f *udpFlow) kept(t *testing.T, what string, begin time.Time) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	es := f.since(begin)
	if len(es) == 0 {
		t.Errorf("%s: never answered", what)
		return
	}
	from, prev, longest := es[0].from, begin, time.Duration(0)
	for _, e := range es {
		if e.from == "" || e.from != from {
			t.Errorf("%s: went from %s to %s at %s: %s", what, from, e.from, e.at.Sub(begin).Round(time.Millisecond), summary(es))
			return
		}
		longest, prev = max(longest, e.at.Sub(prev)), e.at
	}
	if late := time.Since(prev); late > 200*time.Millisecond || longest > time.Second {
		t.Errorf("%s: last answer %s ago, longest silence %s: %s", what, late.Round(time.Millisecond), longest.Round(time.Millisecond), summary(es))
	}
	t.Logf("%s: %d answers over %s, all from %s; longest silence %s", what, len(es), time.Since(begin).Round(100*time.Millisecond), from, longest.Round(time.Millisecond))
}

// summary counts events by kind.
func summary(es []flowEvent) string {
	n := map[string]int{}
	for _, e := range es {
		k := e.from
		if e.refused {
			k = "refused"
		}
		n[k]++
	}
	return fmt.Sprint(n)
}

// moves replaces the only endpoint of the UDP service ns/svc (dns, at
// addr) reps times, alternating between pods, while one flow sends to it,
// and checks each time that the flow reaches the new endpoint within
// staleUDPWithin of the write and never the old one after. It returns the
// move times.
func moves(t *testing.T, c kubernetes.Interface, dial func(ctx context.Context, network, addr string) (net.Conn, error),
	ns, svc, addr string, reps int, pods ...string) []time.Duration {
	t.Helper()
	f := startFlow(t, dial, addr)
	f.first(t, "the flow answered by "+pods[0], time.Now(), func(e flowEvent) bool { return e.from == pods[0] })
	var took []time.Duration
	for i := 1; i <= reps; i++ {
		from, to := pods[(i-1)%len(pods)], pods[i%len(pods)]
		begin := time.Now()
		slice(t, c, ns, svc, "1", dns, []ep{readyEP(ip(to))})
		d := f.first(t, fmt.Sprintf("the flow moved from %s to %s", from, to), begin, func(e flowEvent) bool { return e.from == to })
		took = append(took, d)
		time.Sleep(200 * time.Millisecond) // answers after the move
		if late := f.lastFrom(begin, from); late > d {
			t.Errorf("move %d: %s still answered %s after the write, %s after the flow reached %s", i, from, late, late-d, to)
		}
		if d > staleUDPWithin {
			t.Errorf("move %d: the flow reached %s %s after the write, want within %s", i, to, d, staleUDPWithin)
		}
	}
	f.close()
	if n := f.reconnects(); n > 0 {
		t.Logf("the kernel disconnected the flow's socket %d times over %d moves; each time a new one was connected", n, reps)
	}
	return took
}

// flowStops checks that a flow to the UDP service ns/svc at addr, answered
// by pod, hears nothing more of pod within staleUDPWithin of change, and
// is refused from then on if wantRefused; it returns when the last
// answer came.
func flowStops(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error),
	addr, pod string, wantRefused bool, change func()) time.Duration {
	t.Helper()
	f := startFlow(t, dial, addr)
	f.first(t, "the flow answered by "+pod, time.Now(), func(e flowEvent) bool { return e.from == pod })
	begin := time.Now()
	change()
	var refusedAfter time.Duration
	if wantRefused {
		refusedAfter = f.first(t, "the flow refused", begin, func(e flowEvent) bool { return e.refused })
	}
	time.Sleep(staleUDPWithin + 500*time.Millisecond)
	f.close()
	last := f.lastFrom(begin, pod)
	if last > staleUDPWithin {
		t.Errorf("%s still answered the flow %s after the write, want at most %s; since the write: %s", pod, last, staleUDPWithin, summary(f.since(begin)))
	}
	if refusedAfter > staleUDPWithin {
		t.Errorf("the flow was refused %s after the write, want within %s", refusedAfter, staleUDPWithin)
	}
	if wantRefused {
		// Once refused, it stays refused: nothing answers any more.
		if es := f.since(begin.Add(refusedAfter)); slices.ContainsFunc(es, func(e flowEvent) bool { return e.from != "" }) {
			t.Errorf("answers after the first refusal: %s", summary(es))
		}
	}
	refusedLog := ""
	if wantRefused {
		refusedLog = fmt.Sprintf("; refused after %s", refusedAfter.Round(time.Millisecond))
	}
	if n := f.reconnects(); n > 0 {
		refusedLog += fmt.Sprintf("; the socket was disconnected and a new one connected %d times", n)
	}
	t.Logf("last answer from %s %s after the write%s; since the write: %s", pod, last.Round(time.Millisecond), refusedLog, summary(f.since(begin)))
	return last
}

// p50max is "p50 X, max Y" of ds, for the log.
func p50max(ds []time.Duration) string {
	s := slices.Sorted(slices.Values(ds))
	return fmt.Sprintf("p50 %s, max %s over %d", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

// testStaleUDPFlows is TestDatapath's "a udp flow moves off a removed
// endpoint": an ongoing flow from the host follows its service's only
// endpoint when it is replaced, and is cut off when the service is deleted
// or scaled to zero, each within staleUDPWithin of the write.
func testStaleUDPFlows(t *testing.T) {
	alpha := theLab.Cluster("alpha").Admin
	ns := namespace(t, alpha, "udpflow")
	vip := service(t, alpha, ns, "dns", dns)
	slice(t, alpha, ns, "dns", "1", dns, []ep{readyEP(ip("a1"))})
	addr := netip.AddrPortFrom(vip, 53).String()
	eventually(t, 20*time.Second, "udp answers", func() error {
		_, err := udpOnce(addr)
		return err
	})
	took := moves(t, alpha, theLab.DialHost, ns, "dns", addr, 6, "a1", "a2")
	t.Logf("a udp flow from the host moved to the new endpoint after %v: %s", took, p50max(took))

	t.Run("scale to zero", func(t *testing.T) {
		// a1 is the endpoint again after an even number of moves.
		flowStops(t, theLab.DialHost, addr, "a1", can(t, config.CanReject), func() {
			slice(t, alpha, ns, "dns", "1", dns, nil)
		})
	})
	t.Run("service deleted", func(t *testing.T) {
		slice(t, alpha, ns, "dns", "1", dns, []ep{readyEP(ip("a3"))})
		eventually(t, 20*time.Second, "udp answered by a3", func() error {
			if got, err := udpOnce(addr); err != nil || got != "a3" {
				return fmt.Errorf("answered by %q: %v", got, err)
			}
			return nil
		})
		flowStops(t, theLab.DialHost, addr, "a3", false, func() {
			if err := alpha.CoreV1().Services(ns).Delete(context.Background(), "dns", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	})
}
