//go:build linux

package routes

// The installer against a real kernel, in a network namespace of its own:
// the machine's routes are never the target. It needs root (CAP_NET_ADMIN
// and CAP_SYS_ADMIN for the namespace) and iproute2, and skips without root.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNetns creates a named network namespace, with veth0 (10.77.0.1/24,
// fd00:77::1/64) and its peer veth1 both in it and up, and returns a Kernel
// working in it from any thread.
func testNetns(t *testing.T) (name string, k Kernel) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("iproute2 is missing:", err)
	}
	name = fmt.Sprintf("ko-routes-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	for _, s := range [][]string{
		{"link", "add", "veth0", "type", "veth", "peer", "name", "veth1"},
		{"addr", "add", "10.77.0.1/24", "dev", "veth0"},
		{"addr", "add", "fd00:77::1/64", "dev", "veth0", "nodad"},
		{"link", "set", "veth0", "up"},
		{"link", "set", "veth1", "up"},
		{"link", "set", "lo", "up"},
	} {
		ip(append([]string{"-n", name}, s...)...)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return name, NewKernel(h)
}

// ipRoutes is `ip route show` in the namespace, for the arguments given.
func ipRoutes(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
	// iproute2 ends lines with a space; compare without.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "\n")
}

// monitor records the route changes the kernel announces in ns, so that a
// test sees every add and delete, not just the end state.
type monitor struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{}
}

func startMonitor(t *testing.T, ns string) *monitor {
	t.Helper()
	m := &monitor{cmd: exec.Command("ip", "-n", ns, "monitor", "route"), more: make(chan struct{}, 1)}
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cmd.Process.Kill(); m.cmd.Wait() })
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, s.Text())
			m.mu.Unlock()
			select {
			case m.more <- struct{}{}:
			default:
			}
		}
		io.Copy(io.Discard, out)
	}()
	return m
}

// mark adds and removes a throw-away route and waits until the monitor
// has seen it: everything the kernel announced before is then recorded.
// It returns what was recorded since the last mark, without the marks.
func (m *monitor) mark(t *testing.T, ns string) []string {
	t.Helper()
	// ip monitor subscribes a moment after it starts: a marker it missed
	// is tried again with a new one, so the first mark also waits for the
	// subscription. Lines of missed markers are dropped with the rest.
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		marker := fmt.Sprintf("192.0.2.%d", (time.Now().UnixNano()+int64(attempt))%250+1)
		if out, err := exec.Command("ip", "-n", ns, "route", "add", marker, "dev", "veth0").CombinedOutput(); err != nil {
			t.Fatalf("marker: %v: %s", err, out)
		}
		exec.Command("ip", "-n", ns, "route", "del", marker, "dev", "veth0").Run()
		wait := time.After(time.Second)
		for {
			m.mu.Lock()
			for i, l := range m.lines {
				if strings.HasPrefix(l, "Deleted "+marker+" ") {
					var got []string
					for _, l := range m.lines[:i] {
						if !strings.Contains(l, "192.0.2.") {
							got = append(got, l)
						}
					}
					m.lines = nil
					m.mu.Unlock()
					return got
				}
			}
			m.mu.Unlock()
			select {
			case <-m.more:
				continue
			case <-wait:
			}
			break
		}
	}
	t.Fatal("ip monitor did not report the marker route")
	return nil
}

func TestKernel(t *testing.T) {
	ns, k := testNetns(t)
	ctx := context.Background()
	in := New(Options{Kernel: k})

	// Someone else's routes: one to a pod CIDR we will be asked for, one
	// more specific inside a pod CIDR we route.
	for _, r := range [][]string{
		{"route", "add", "10.245.9.0/24", "via", "10.77.0.9", "proto", "static"},
		{"route", "add", "10.245.1.128/25", "via", "10.77.0.50"},
		{"-6", "route", "add", "fd00:245:9::/64", "via", "fd00:77::9"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", r, err, out)
		}
	}
	foreign := ipRoutes(t, ns, "route", "show") + "\n" + ipRoutes(t, ns, "-6", "route", "show")
	mon := startMonitor(t, ns)
	mon.mark(t, ns)

	if err := in.Sync(ctx, []Route{
		route("10.245.1.0/24", "10.77.0.21"),
		route("10.245.2.0/24", "10.77.0.22"),
		route("10.245.9.0/24", "10.77.0.29"), // someone else's: refused
		route("10.77.0.0/16", "10.77.0.1"),   // covers veth0's network: refused
		route("fd00:245:1::/64", "fd00:77::21"),
		route("fd00:245:9::/64", "fd00:77::29"), // someone else's: refused
	}, nil); err != nil {
		t.Fatal(err)
	}
	want4 := "10.245.1.0/24 via 10.77.0.21 dev veth0 metric 2048\n10.245.2.0/24 via 10.77.0.22 dev veth0 metric 2048"
	if got := ipRoutes(t, ns, "route", "show", "proto", "95"); got != want4 {
		t.Errorf("ip route show proto 95:\n%s\nwant:\n%s", got, want4)
	}
	if got := ipRoutes(t, ns, "-6", "route", "show", "proto", "95"); !strings.HasPrefix(got, "fd00:245:1::/64 via fd00:77::21 dev veth0 metric 2048") || strings.Count(got, "\n") != 0 {
		t.Errorf("ip -6 route show proto 95:\n%s", got)
	}
	if r := in.Refused(); len(r) != 3 {
		t.Errorf("refused %v, want 3", r)
	}
	// The kernel still chooses the more specific foreign route inside ours.
	if got := ipRoutes(t, ns, "route", "get", "10.245.1.200"); !strings.Contains(got, "via 10.77.0.50") {
		t.Errorf("route get 10.245.1.200: %s; the foreign /25 must win", got)
	}
	if got := ipRoutes(t, ns, "route", "get", "10.245.1.20"); !strings.Contains(got, "via 10.77.0.21") {
		t.Errorf("route get 10.245.1.20: %s", got)
	}
	events := mon.mark(t, ns)
	if len(events) != 3 {
		t.Errorf("first sync: %d route events, want 3 adds:\n%s", len(events), strings.Join(events, "\n"))
	}

	// A change: one gateway moves, one route goes, one comes, one stays.
	// The kernel announces exactly those three changes: the route that
	// stays is neither deleted nor added again.
	if err := in.Sync(ctx, []Route{
		route("10.245.1.0/24", "10.77.0.21"),
		route("10.245.2.0/24", "10.77.0.32"),
		route("10.245.3.0/24", "10.77.0.23"),
	}, nil); err != nil {
		t.Fatal(err)
	}
	events = mon.mark(t, ns)
	wantEvents := []string{
		"10.245.2.0/24 via 10.77.0.32 dev veth0 proto 95 metric 2048",
		"10.245.3.0/24 via 10.77.0.23 dev veth0 proto 95 metric 2048",
		"Deleted fd00:245:1::/64 via fd00:77::21 dev veth0 proto 95 metric 2048",
	}
	if len(events) != len(wantEvents) {
		t.Errorf("second sync: route events\n%s\nwant\n%s", strings.Join(events, "\n"), strings.Join(wantEvents, "\n"))
	} else {
		for i, w := range wantEvents {
			if !strings.HasPrefix(strings.TrimSpace(events[i]), w) {
				t.Errorf("event %d = %q, want %q", i, events[i], w)
			}
		}
	}
	want4 = "10.245.1.0/24 via 10.77.0.21 dev veth0 metric 2048\n10.245.2.0/24 via 10.77.0.32 dev veth0 metric 2048\n10.245.3.0/24 via 10.77.0.23 dev veth0 metric 2048"
	if got := ipRoutes(t, ns, "route", "show", "proto", "95"); got != want4 {
		t.Errorf("after the change:\n%s\nwant:\n%s", got, want4)
	}
	// Unchanged: nothing at all.
	if err := in.Sync(ctx, []Route{route("10.245.1.0/24", "10.77.0.21"), route("10.245.2.0/24", "10.77.0.32"), route("10.245.3.0/24", "10.77.0.23")}, nil); err != nil {
		t.Fatal(err)
	}
	if events := mon.mark(t, ns); len(events) != 0 {
		t.Errorf("an unchanged sync changed routes:\n%s", strings.Join(events, "\n"))
	}

	// A second installer (a restart) takes over what the first made.
	in2 := New(Options{Kernel: k})
	if err := in2.Sync(ctx, []Route{route("10.245.1.0/24", "10.77.0.21")}, nil); err != nil {
		t.Fatal(err)
	}
	if events := mon.mark(t, ns); len(events) != 2 || !strings.HasPrefix(events[0], "Deleted 10.245.2.0/24") || !strings.HasPrefix(events[1], "Deleted 10.245.3.0/24") {
		t.Errorf("after a restart: %q", events)
	}

	// Cleanup leaves exactly the routes that were there before us.
	if err := in2.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ipRoutes(t, ns, "route", "show", "proto", "95") + ipRoutes(t, ns, "-6", "route", "show", "proto", "95"); got != "" {
		t.Errorf("routes of ours after Cleanup:\n%s", got)
	}
	if after := ipRoutes(t, ns, "route", "show") + "\n" + ipRoutes(t, ns, "-6", "route", "show"); after != foreign {
		t.Errorf("the other routes changed:\nbefore:\n%s\nafter:\n%s", foreign, after)
	}
}
