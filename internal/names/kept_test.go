package names

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestKeptSockets: a second server given the first one's sockets, as
// systemd hands them back after a restart, answers the queries sent while
// no server read them, UDP and TCP, and binds nothing anew.
func TestKeptSockets(t *testing.T) {
	opt := Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	first := New(opt)
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	files, err := first.Files()
	if err != nil {
		t.Fatal(err)
	}
	addrs := first.Addrs()
	first.Stop()
	// Listen keeps port 0: the kept sockets' ports, whatever they are.
	if len(files) != 2 {
		t.Fatalf("Files: %v, want one UDP and one TCP socket", files)
	}
	opt.Inherited = files
	// Sent during the "restart": the kernel keeps them.
	req := new(dns.Msg)
	req.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	udp, err := net.Dial("udp", addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	wire, _ := req.Pack()
	if _, err := udp.Write(wire); err != nil {
		t.Fatal(err)
	}
	tcp, err := net.DialTimeout("tcp", addrs[1].String(), time.Second)
	if err != nil {
		t.Fatalf("a TCP connection while no server reads: %v", err)
	}
	defer tcp.Close()

	second := New(opt)
	second.Set(Build(testState(), testZones))
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	udp.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	k, err := udp.Read(buf)
	if err != nil {
		t.Fatalf("the UDP query sent during the restart: %v", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:k]); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("the UDP query sent during the restart: %v %v", m, err)
	}
	co := &dns.Conn{Conn: tcp}
	co.SetDeadline(time.Now().Add(2 * time.Second))
	if err := co.WriteMsg(req); err != nil {
		t.Fatal(err)
	}
	if m, err := co.ReadMsg(); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("the TCP connection made during the restart: %v %v", m, err)
	}
}
