//go:build kernel

package ebpf

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// A lab is what one kernel test runs in, all of it thrown away after:
// a network namespace of its own, where the backends listen on loopback
// addresses and the client runs; a child of the cgroup v2 mount holding
// only the client process, where the hooks attach; and a bpffs mounted
// for the test alone, where the objects are pinned. The machine's own
// namespace, cgroups and /sys/fs/bpf are never touched.
type lab struct {
	t      *testing.T
	ns     string
	nsH    netns.NsHandle
	cgroup string
	bpffs  string
	pinDir string
	cookie uint64
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Skip(err)
	}
	id := fmt.Sprintf("%08x", rand.Uint32())
	l := &lab{t: t, ns: "ko-ebpf-test-" + id, cgroup: filepath.Join(mnt, "kube-outpost-test-"+id)}
	labRun(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { labRun(t, "ip", "netns", "del", l.ns) })
	labRun(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	if l.nsH, err = netns.GetFromName(l.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.nsH.Close() })
	if err := os.Mkdir(l.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered before the client's cleanup, so it runs after the
	// client has left the cgroup.
	t.Cleanup(func() {
		if err := os.Remove(l.cgroup); err != nil {
			t.Errorf("removing the test cgroup: %v", err)
		}
	})
	l.bpffs = t.TempDir()
	labRun(t, "mount", "-t", "bpf", "bpf", l.bpffs)
	t.Cleanup(func() {
		if left, _ := os.ReadDir(l.pinDir); len(left) > 0 {
			t.Errorf("pins left in %s: %v", l.pinDir, left)
		}
		labRun(t, "umount", l.bpffs)
	})
	l.pinDir = filepath.Join(l.bpffs, "kube-outpost")
	l.inNS(func() {
		l.cookie, err = OwnNetnsCookie()
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func labRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Errorf("%s %v: %v: %s", name, args, err, out)
	}
}

// inNS runs f on a thread in the lab's namespace. Sockets made there
// stay in it; the thread is not reused.
func (l *lab) inNS(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Never unlocked: the thread, in another namespace, exits with
		// the goroutine.
		if err := netns.Set(l.nsH); err != nil {
			l.t.Error(err)
			return
		}
		f()
	}()
	<-done
}

// proxier is a Proxier on the lab's cgroup, namespace and bpffs; the test
// ends with its Cleanup.
func (l *lab) proxier() *Proxier {
	p := New(Options{PinDir: l.pinDir, Cgroup: l.cgroup, NetnsCookie: l.cookie, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	l.t.Cleanup(func() {
		if err := p.Cleanup(l.t.Context()); err != nil {
			l.t.Errorf("Cleanup: %v", err)
		}
	})
	return p
}

// backends listen on 127.0.0.<first>... :port in the lab, each answering
// a TCP connection or a UDP datagram with its own address.
func (l *lab) backends(first, n int, port uint16) []string {
	var addrs []netip.Addr
	for i := range n {
		addrs = append(addrs, netip.AddrFrom4([4]byte{127, 0, 0, byte(first + i)}))
	}
	return l.backendsAt(addrs, port)
}

// backends6 listen on fd00::<first>... :port, addresses of the lab's
// loopback.
func (l *lab) backends6(first, n int, port uint16) []string {
	var addrs []netip.Addr
	for i := range n {
		a := netip.MustParseAddr(fmt.Sprintf("fd00::%x", first+i))
		labRun(l.t, "ip", "-n", l.ns, "addr", "add", a.String()+"/128", "dev", "lo", "nodad")
		addrs = append(addrs, a)
	}
	return l.backendsAt(addrs, port)
}

func (l *lab) backendsAt(addrs []netip.Addr, port uint16) []string {
	var out []string
	for _, a := range addrs {
		addr := netip.AddrPortFrom(a, port)
		out = append(out, addr.String())
		var tl net.Listener
		var uc net.PacketConn
		var err error
		l.inNS(func() {
			if tl, err = net.Listen("tcp", addr.String()); err != nil {
				return
			}
			uc, err = net.ListenPacket("udp", addr.String())
		})
		if err != nil {
			l.t.Fatal(err)
		}
		l.t.Cleanup(func() { tl.Close(); uc.Close() })
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, addr.String()+"\n")
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := uc.ReadFrom(buf)
				if err != nil {
					return
				}
				uc.WriteTo([]byte(addr.String()), from)
			}
		}()
	}
	return out
}
