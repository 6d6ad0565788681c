//go:build kernel

// Stale UDP flows against the real kernel: real conntrack entries, made by
// real packets through the Proxier's DNAT rules. The test programs
// iptables, addresses and routes, so it runs itself again in a network
// namespace of its own (unshare -n), never in the one it was started in:
//
//	go test -tags kernel -run TestKernel ./internal/proxy/iptables/   # as root
package iptables

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestKernelStaleUDPFlows: in one sync a UDP service moves from endpoint a
// to b and another UDP service is deleted. Their clients' conntrack entries
// go, in one batch; the entries of a service whose endpoint stayed and of a
// client talking to a directly are kept; the moved client's next datagram
// is answered by b, on the same socket.
func TestKernelStaleUDPFlows(t *testing.T) {
	if !inNewNetns(t) {
		return
	}
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) { kernelStaleUDP(t, v6) })
	}
}

func kernelStaleUDP(t *testing.T, v6 bool) {
	// The endpoints and the VIPs live on lo: a datagram to a VIP is
	// DNATed in nat OUTPUT and delivered to this namespace's own server.
	a, b := "10.0.0.1:5353", "10.0.0.2:5353"
	dnsIP, goneIP, keepIP, cidr := "10.96.0.53", "10.96.0.55", "10.96.0.54", "10.96.0.0/16"
	family, cidrs := netlink.InetFamily(unix.AF_INET), []string{cidr}
	if v6 {
		a, b = "[fd00::1]:5353", "[fd00::2]:5353"
		dnsIP, goneIP, keepIP, cidr = "fd00:96::53", "fd00:96::55", "fd00:96::54", "fd00:96::/112"
		family, cidrs = unix.AF_INET6, []string{cidr}
	}
	ip(t, "link", "set", "lo", "up")
	for _, ep := range []string{a, b} {
		addr := netip.MustParseAddrPort(ep).Addr()
		args := []string{"addr", "replace", netip.PrefixFrom(addr, addr.BitLen()).String(), "dev", "lo"}
		if v6 {
			// Usable at once, not after duplicate address detection.
			args = append(args, "nodad")
		}
		ip(t, args...)
		udpServer(t, ep, ep)
	}
	ip(t, "route", "replace", cidr, "dev", "lo")

	r, err := NewRunner(v6)
	if err != nil {
		t.Skip(err)
	}
	p := New(Options{Runner: r, IPv6: v6, MasqueradeMark: 0x100000, Conntrack: NewConntrack()})
	t.Cleanup(func() {
		if err := p.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	dns := svc("alpha", "default", "dns", "dns", model.UDP, dnsIP, 53, a)
	gone := svc("alpha", "default", "gone", "dns", model.UDP, goneIP, 53, b)
	keep := svc("alpha", "default", "keep", "dns", model.UDP, keepIP, 53, a)
	mustSync(t, p, state(cluster("alpha", true, cidrs, dns, gone, keep)), true)

	vip := func(s string) string { return netip.AddrPortFrom(netip.MustParseAddr(s), 53).String() }
	toDNS, toGone, toKeep, direct := dial(t, vip(dnsIP)), dial(t, vip(goneIP)), dial(t, vip(keepIP)), dial(t, a)
	for _, c := range []struct {
		conn *net.UDPConn
		want string
	}{{toDNS, a}, {toGone, b}, {toKeep, a}, {direct, a}} {
		if got := exchange(t, c.conn); got != c.want {
			t.Fatalf("%s answered by %s, want %s", c.conn.RemoteAddr(), got, c.want)
		}
	}

	mustSync(t, p, state(cluster("alpha", true, cidrs, withEndpoints(dns, b), keep)), false)
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		conn *net.UDPConn
		want bool
	}{{"moved service", toDNS, false}, {"deleted service", toGone, false}, {"unchanged service", toKeep, true}, {"endpoint reached directly", direct, true}} {
		if got := hasEntry(flows, c.conn); got != c.want {
			t.Errorf("%s: conntrack entry there: %v, want %v", c.name, got, c.want)
		}
	}
	if got := exchange(t, toDNS); got != b {
		t.Errorf("the moved client is answered by %s, want %s", got, b)
	}
	if got := exchange(t, toKeep); got != a {
		t.Errorf("the unchanged service's client is answered by %s, want %s", got, a)
	}
}

// parentNetnsEnv carries the namespace the test was started in to its run
// in a new one, which checks that it is elsewhere.
const parentNetnsEnv = "KO_KERNEL_TEST_PARENT_NETNS"

// inNewNetns says whether this run of t is in a network namespace of its
// own. Where it is not, it runs t again in a new one, reports that run's
// outcome as t's, and says false: the caller returns.
func inNewNetns(t *testing.T) bool {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Skip(err)
	}
	if parent := os.Getenv(parentNetnsEnv); parent != "" {
		if parent == self {
			t.Fatalf("still in the network namespace the test was started in (%s)", self)
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, for a network namespace of its own")
	}
	cmd := exec.Command("unshare", "--net", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), parentNetnsEnv+"="+self)
	out, err := cmd.CombinedOutput()
	t.Logf("in a new network namespace:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("unshare --net %s: %v", os.Args[0], err)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()+" "):
		t.Skip("skipped in the new network namespace")
	}
	return false
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// udpServer answers every datagram at addr with name.
func udpServer(t *testing.T, addr, name string) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
}

// dial opens one client socket: one source port, one conntrack entry for
// as long as it talks.
func dial(t *testing.T, addr string) *net.UDPConn {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func exchange(t *testing.T, c *net.UDPConn) string {
	t.Helper()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("%s: %v", c.RemoteAddr(), err)
	}
	return string(buf[:n])
}

// hasEntry says whether c's datagrams have a conntrack entry.
func hasEntry(flows []*netlink.ConntrackFlow, c *net.UDPConn) bool {
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	remote := c.RemoteAddr().(*net.UDPAddr).AddrPort()
	for _, f := range flows {
		src, _ := addrPort(f.Forward.SrcIP, f.Forward.SrcPort)
		dst, _ := addrPort(f.Forward.DstIP, f.Forward.DstPort)
		if f.Forward.Protocol == unix.IPPROTO_UDP && src == unmapped(local) && dst == unmapped(remote) {
			return true
		}
	}
	return false
}
