package daemon

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
)

// fakeFDStore is systemd's file descriptor store.
type fakeFDStore struct {
	mu      sync.Mutex
	files   map[string]*os.File
	removed []string
}

func (s *fakeFDStore) StoreFile(name string, f *os.File) error {
	fd, err := dupOf(f)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = map[string]*os.File{}
	}
	s.files[name] = os.NewFile(uintptr(fd), name)
	return nil
}

func (s *fakeFDStore) RemoveFiles(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, name)
	return nil
}

// TestDNSServerKeptSockets: the server keeps its sockets in systemd's
// store; after a restart it takes them back, and reads them only once the
// first sync has given it the names, so that a query sent while no
// process read them waits and gets its answer rather than SERVFAIL. A
// kept socket no listen address takes is dropped from the store.
func TestDNSServerKeptSockets(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := config.DNS{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second}
	clusters := func() []config.Cluster {
		return []config.Cluster{{Name: "alpha", DNSZone: "alpha.internal", ServiceCIDRs: []netip.Prefix{alphaCIDR}}}
	}
	newServer := func() *dnsServer {
		return newDNSServer(cfg, clusters, metrics.New(metrics.Options{Version: "1", Mode: "iptables", DNS: true}), log)
	}
	first, store := newServer(), &fakeFDStore{}
	first.keep(nil, store)
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	addr := first.srv.Addrs()[0].String()
	first.Stop()
	if len(store.files) != 2 {
		t.Fatalf("stored %v, want the UDP and TCP sockets", store.files)
	}

	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := new(dns.Msg)
	req.SetQuestion("web.ns.svc.alpha.internal.", dns.TypeA)
	wire, _ := req.Pack()
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}

	second, store2 := newServer(), &fakeFDStore{}
	kept := map[string]*os.File{"dns-udp-10.0.0.9_53": os.NewFile(uintptr(mustDup(t, store.files)), "stale")}
	for name, f := range store.files {
		kept[name] = f
	}
	second.keep(kept, store2)
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	if !slices.Equal(store2.removed, []string{"dns-udp-10.0.0.9_53"}) || len(store2.files) != 0 {
		t.Errorf("removed %v, stored %v: want the stale socket removed, the kept ones left in the store", store2.removed, store2.files)
	}
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("answered before the first sync")
	}
	if err := second.Sync(t.Context(), dnsState()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	k, err := c.Read(buf)
	if err != nil {
		t.Fatalf("the query sent during the restart: %v", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:k]); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("the query sent during the restart: %v %v", m, err)
	}
}

// mustDup is a file descriptor to stand for a stale socket.
func mustDup(t *testing.T, files map[string]*os.File) int {
	t.Helper()
	for _, f := range files {
		fd, err := dupOf(f)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	t.Fatal("no file")
	return -1
}

// dupOf dups f's descriptor without f.Fd(), which would make the socket
// blocking for the server reading it too.
func dupOf(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(ffd uintptr) { fd, derr = syscall.Dup(int(ffd)) }); err != nil {
		return -1, err
	}
	return fd, derr
}
