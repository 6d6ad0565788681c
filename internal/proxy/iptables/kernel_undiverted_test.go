//go:build kernel

package iptables

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestKernelUndivertedTCP: a connection to a ClusterIP tried before its
// rules existed leaves a conntrack entry without DNAT. A later connection
// from the same source port is taken by conntrack for that one's SYN
// retransmitted, and leaves without DNAT too, for as long as the entry
// lives (120 s): the soak saw this as "network is unreachable" from the
// router minutes after the service was programmed. The sync that programs
// the service forgets the entry, and the same source port connects.
func TestKernelUndivertedTCP(t *testing.T) {
	if !inNewNetns(t) {
		return
	}
	const (
		ep     = "10.0.0.1:8080"
		client = "10.0.0.9:40000"
		vip    = "10.96.0.80"
		cidr   = "10.96.0.0/16"
	)
	// A ClusterIP without rules goes to lo, and no one there takes it:
	// like the router that has no route for it.
	p, _ := undivertedLab(t, "lo")
	// Another service first: a namespace tracks connections only once a
	// rule needs it, as the host's does while the daemon runs.
	other := svc("alpha", "default", "other", "http", model.TCP, "10.96.0.81", 80, ep)
	mustSync(t, p, state(cluster("alpha", true, []string{cidr}, other)), true)

	to := net.JoinHostPort(vip, "80")
	if _, err := connectFrom(client, to); err == nil {
		t.Fatal("connected to the ClusterIP before it was programmed")
	}
	web := svc("alpha", "default", "web", "http", model.TCP, vip, 80, ep)
	mustSync(t, p, state(cluster("alpha", true, []string{cidr}, other, web)), false)

	got, err := connectFrom(client, to)
	if err != nil {
		t.Fatalf("from %s, the port of the connection tried before the rules: %v", client, err)
	}
	if got != "endpoint" {
		t.Fatalf("answered by %q", got)
	}
}

// TestKernelFlushedTCP: a connection tried while a firewall reload had
// flushed our rules leaves a conntrack entry without DNAT, and its
// client's retransmitted SYNs follow that entry past the repaired rules
// until the client gives up, long after the repair (firewalld flushes
// several times over one reload, so many clients try meanwhile). The probe that finds the rules gone has the repair forget such
// entries for every VIP, and the same source port connects.
func TestKernelFlushedTCP(t *testing.T) {
	if !inNewNetns(t) {
		return
	}
	const (
		ep     = "10.0.0.1:8080"
		client = "10.0.0.9:40001"
		vip    = "10.96.0.80"
		cidr   = "10.96.0.0/16"
	)
	// Without our rules a ClusterIP goes out of a link where no one
	// answers its ARP, so the SYN is dropped, as a router without a route
	// drops it (or sends back an ICMP error that the client gives up on):
	// conntrack keeps the entry. An answer (a RST from lo) would close it,
	// and conntrack lets a new SYN reopen a closed entry. (No dummy link:
	// the host kernel may lack the module.)
	ip(t, "link", "add", "void", "type", "veth", "peer", "name", "void-peer")
	ip(t, "link", "set", "void", "up")
	ip(t, "link", "set", "void-peer", "up")
	// The host's firewall tracks connections whatever becomes of our
	// rules, as firewalld's and Docker's rules do: without a rule that
	// needs conntrack, a namespace tracks nothing.
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader("table inet firewall { chain out { type filter hook output priority 0; ct state established accept; }; }\n")
	if out, err := nft.CombinedOutput(); err != nil {
		t.Skipf("nft: %v: %s", err, out)
	}
	p, r := undivertedLab(t, "void")
	st := state(cluster("alpha", true, []string{cidr}, svc("alpha", "default", "web", "http", model.TCP, vip, 80, ep)))
	mustSync(t, p, st, true)
	to := net.JoinHostPort(vip, "80")
	if got, err := connectFrom("10.0.0.9:0", to); err != nil || got != "endpoint" {
		t.Fatalf("before the flush: %q, %v", got, err)
	}

	iptables := strings.Replace(r.(*execRunner).restore, "-restore", "", 1)
	if out, err := exec.Command(iptables, "-t", "nat", "-F").CombinedOutput(); err != nil {
		t.Fatalf("%s -t nat -F: %v: %s", iptables, err, out)
	}
	if _, err := connectFrom(client, to); err == nil {
		t.Fatal("connected to the ClusterIP with the nat table flushed")
	}
	missing, err := p.Missing(t.Context())
	if err != nil || len(missing) == 0 {
		t.Fatalf("Missing = %q, %v after the flush", missing, err)
	}
	mustSync(t, p, st, true)

	got, err := connectFrom(client, to)
	if err != nil {
		t.Fatalf("from %s, the port of the connection tried while the rules were gone: %v", client, err)
	}
	if got != "endpoint" {
		t.Fatalf("answered by %q", got)
	}
}

// undivertedLab serves "endpoint" at 10.0.0.1:8080 from this network
// namespace, with 10.0.0.9 for the client, and routes the service range
// 10.96.0.0/16 out of dev when no rule of ours takes it. It returns the
// proxier, cleaned up after the test, and its runner.
func undivertedLab(t *testing.T, dev string) (*Proxier, Runner) {
	t.Helper()
	ip(t, "link", "set", "lo", "up")
	for _, a := range []string{"10.0.0.1/32", "10.0.0.9/32"} {
		ip(t, "addr", "replace", a, "dev", "lo")
	}
	ip(t, "route", "replace", "10.96.0.0/16", "dev", dev)
	tcpServer(t, "10.0.0.1:8080", "endpoint")
	r, err := NewRunner(false)
	if err != nil {
		t.Skip(err)
	}
	p := New(Options{Runner: r, MasqueradeMark: 0x100000, Conntrack: NewConntrack()})
	t.Cleanup(func() {
		if err := p.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return p, r
}

// connectFrom connects from the address and port from to to, and returns
// what the server there says.
func connectFrom(from, to string) (string, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from)), Timeout: time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// tcpServer says name to every connection at addr, and closes it.
func tcpServer(t *testing.T, addr, name string) {
	l, err := net.Listen("tcp", addr)
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
			c.Write([]byte(name))
			c.Close()
		}
	}()
}
