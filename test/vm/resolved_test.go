//go:build vm

package vm

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// otherName is a name outside kube-outpost's zones that only the guest's
// own resolver before kube-outpost (upstream, on the host) answers.
const otherName = "other.vmtest.example."

var otherAddr = netip.MustParseAddr("192.0.2.7")

// TestResolvedInVM installs systemd-resolved in the guest (resolved.sh),
// whose link has the upstream below as its DNS server, then the .deb with
// [dns]: the daemon registers its server with resolved for the zones
// only; `getent hosts` and curl reach a service by name through resolved,
// and other names still go to the upstream (which never sees ours); the
// registration survives a restart of resolved and of the daemon (lookups
// during it are counted), stays while the daemon is stopped, and cleanup
// and purge each leave resolved as it was before.
func TestResolvedInVM(t *testing.T) {
	deb, _ := packages(t)
	img := image(t)
	w := setup(t)
	up := startUpstream(t, w.lab)
	share := t.TempDir()
	copyFile(t, deb, filepath.Join(share, filepath.Base(deb)))
	steps := map[string]hostStep{
		"upstream-queries": func(context.Context) (string, error) {
			other, ours := up.counts()
			return fmt.Sprintf("UPSTREAM_OTHER=%d\nUPSTREAM_OURS=%d\n", other, ours), nil
		},
	}
	w.writeShare(t, share, "resolved", fmt.Sprintf("UPSTREAM_DNS=10.0.2.2:%d", up.port), "OTHER_NAME="+strings.TrimSuffix(otherName, "."),
		"OTHER_ADDR="+otherAddr.String(), w.serveSteps(t, steps))
	g := w.runGuest(t, img, share, guestTimeout, nil)
	artifacts(t, t.Name(), g.log, g.consoles)
	for _, l := range strings.Split(g.log, "\n") {
		if _, f, ok := strings.Cut(l, "VMTEST-INFO: "); ok {
			t.Logf("figure: %s", f)
		}
	}
	other, ours := up.counts()
	t.Logf("upstream: %d queries for %s, %d for names under .internal or in-addr.arpa", other, otherName, ours)
	if !strings.HasPrefix(g.result, "PASS") {
		t.Logf("guest log:\n%s", g.log)
		t.Fatal(g.problem)
	}
	if ours != 0 {
		t.Errorf("the upstream was asked %d names of kube-outpost's zones: resolved must send them to kube-outpost alone", ours)
	}
}

// upstream is the guest's DNS server before kube-outpost: a server in the
// lab's host namespace, reached from the guest at 10.0.2.2 through QEMU's
// user networking. It answers otherName and refuses nothing else, and
// counts what it is asked.
type upstream struct {
	port int
	mu   sync.Mutex
	// other: queries for otherName; ours: for names under .internal or
	// of in-addr.arpa, which must never come here.
	other, ours int
}

func startUpstream(t *testing.T, l *lab.Lab) *upstream {
	t.Helper()
	var pc net.PacketConn
	err := lab.InNetns(l.HostNS, func() error {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{port: pc.LocalAddr().(*net.UDPAddr).Port}
	srv := &dns.Server{PacketConn: pc, Handler: u}
	go srv.ActivateAndServe()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.ShutdownContext(ctx)
	})
	return u
}

func (u *upstream) counts() (other, ours int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.other, u.ours
}

func (u *upstream) ServeDNS(rw dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		rw.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	u.mu.Lock()
	switch {
	case name == otherName:
		u.other++
	case strings.HasSuffix(name, ".internal.") || strings.HasSuffix(name, ".in-addr.arpa."):
		u.ours++
	}
	u.mu.Unlock()
	switch {
	case name == otherName && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: otherAddr.AsSlice()})
	case name == otherName:
		// NODATA
	default:
		m.Rcode = dns.RcodeNameError
	}
	if err := rw.WriteMsg(m); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
	}
}
