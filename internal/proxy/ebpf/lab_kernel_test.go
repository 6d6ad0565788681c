//go:build kernel

package ebpf

import (
	"bufio"
	"encoding/json"
	"errors"
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
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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

// client is a process in the lab's namespace and cgroup that makes the
// connections the test asks for (clientMain).
type client struct {
	t   *testing.T
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
}

func (l *lab) client() *client {
	cmd := exec.Command("ip", "netns", "exec", l.ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"=/"+filepath.Base(l.cgroup))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	c := &client{t: l.t, in: in, out: bufio.NewScanner(out)}
	l.t.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			l.t.Errorf("client: %v", err)
		}
	})
	// ip netns exec execs the client in its own process, and gives it
	// a sysfs of the namespace, without the cgroup mount: it is moved
	// from here, before its first command.
	if err := os.WriteFile(filepath.Join(l.cgroup, "cgroup.procs"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644); err != nil {
		l.t.Fatal(err)
	}
	if r := c.do("ready"); r.Err != "" {
		l.t.Fatalf("client: %s", r.Err)
	}
	return c
}

// result is one answer of the client.
type result struct {
	// Backend is what the server said it is.
	Backend string `json:"backend,omitempty"`
	// Peer is getpeername's address for a connected socket, the
	// reply's source for recvfrom.
	Peer  string `json:"peer,omitempty"`
	Err   string `json:"err,omitempty"`
	Errno int    `json:"errno,omitempty"`
	// Took is how long the call took.
	Took time.Duration `json:"took,omitempty"`
	// Of a loop: connects made, failed ones with their first error,
	// and the backends seen.
	Count    int            `json:"count,omitempty"`
	Failed   int            `json:"failed,omitempty"`
	Backends map[string]int `json:"backends,omitempty"`
}

func (c *client) do(cmd string) result {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		c.t.Fatal(err)
	}
	if !c.out.Scan() {
		c.t.Fatalf("client gave no answer to %q: %v", cmd, c.out.Err())
	}
	var r result
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		c.t.Fatalf("client's answer to %q: %v: %s", cmd, err, c.out.Text())
	}
	return r
}

const clientEnv = "KO_EBPF_TEST_CLIENT"

func TestMain(m *testing.M) {
	if cg := os.Getenv(clientEnv); cg != "" {
		clientMain(cg)
		return
	}
	os.Exit(m.Run())
}

// clientMain answers commands from stdin, one JSON line each, once the
// test has moved it into the cgroup cg (its path in the v2 hierarchy).
func clientMain(cg string) {
	ready := func() (r result) {
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return fail(r, err)
		}
		if !slices.Contains(strings.Split(string(b), "\n"), "0::"+cg) {
			r.Err = fmt.Sprintf("not in cgroup %s: %s", cg, b)
		}
		return r
	}
	enc := json.NewEncoder(os.Stdout)
	s := bufio.NewScanner(os.Stdin)
	// held are connected UDP sockets kept between commands, by name.
	held := map[string]net.Conn{}
	for s.Scan() {
		f := strings.Fields(s.Text())
		var r result
		switch f[0] {
		case "ready":
			r = ready()
		case "tcp":
			r = dialTCP(f[1])
		case "udp":
			r = sendUDP(f[1])
		case "cudp":
			r = connectedUDP(f[1])
		case "hold":
			// hold NAME VIP: a connected UDP socket, kept.
			var c net.Conn
			c, r = holdUDP(f[2])
			if c != nil {
				held[f[1]] = c
			}
		case "again":
			// again NAME: one more request on a held socket.
			r = exchange(held[f[1]], result{})
		case "tcp6m":
			r = mappedTCP(f[1])
		case "udp6m":
			r = mappedUDP(f[1])
		case "loop":
			d, _ := time.ParseDuration(f[2])
			r = loopTCP(f[1], d)
		default:
			r.Err = "unknown command " + f[0]
		}
		enc.Encode(r)
	}
}

func fail(r result, err error) result {
	r.Err = err.Error()
	if errno, ok := errorsAsErrno(err); ok {
		r.Errno = int(errno)
	}
	return r
}

func errorsAsErrno(err error) (unix.Errno, bool) {
	var e unix.Errno
	ok := errors.As(err, &e)
	return e, ok
}

// peer is getpeername(2) on c's socket, asked now rather than the
// address Go kept from the connect.
func peer(c interface {
	SyscallConn() (syscall.RawConn, error)
}) string {
	raw, err := c.SyscallConn()
	if err != nil {
		return err.Error()
	}
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getpeername(int(fd)) }); err != nil {
		return err.Error()
	}
	if serr != nil {
		return serr.Error()
	}
	return sockaddrString(sa)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%T", sa)
}

// mapped is an AF_INET6 socket (dual stack, as Java's and many others'
// are) and target's address as ::ffff:a.b.c.d. Go itself would use an
// AF_INET socket.
func mapped(typ int, target string) (int, *unix.SockaddrInet6, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return -1, nil, err
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	tv := unix.Timeval{Sec: 3}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	return fd, &unix.SockaddrInet6{Addr: netip.AddrFrom16(ap.Addr().As16()).As16(), Port: int(ap.Port())}, nil
}

func mappedTCP(target string) result {
	fd, sa, err := mapped(unix.SOCK_STREAM, target)
	if err != nil {
		return fail(result{}, err)
	}
	defer unix.Close(fd)
	start := time.Now()
	err = unix.Connect(fd, sa)
	r := result{Took: time.Since(start)}
	if err != nil {
		return fail(r, err)
	}
	p, err := unix.Getpeername(fd)
	if err != nil {
		return fail(r, err)
	}
	r.Peer = sockaddrString(p)
	buf := make([]byte, 512)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return fail(r, err)
	}
	r.Backend = strings.TrimSpace(string(buf[:n]))
	return r
}

func mappedUDP(target string) result {
	fd, sa, err := mapped(unix.SOCK_DGRAM, target)
	if err != nil {
		return fail(result{}, err)
	}
	defer unix.Close(fd)
	start := time.Now()
	if err := unix.Sendto(fd, []byte("hello"), 0, sa); err != nil {
		return fail(result{Took: time.Since(start)}, err)
	}
	buf := make([]byte, 512)
	n, from, err := unix.Recvfrom(fd, buf, 0)
	r := result{Took: time.Since(start)}
	if err != nil {
		return fail(r, err)
	}
	r.Backend, r.Peer = string(buf[:n]), sockaddrString(from)
	return r
}

func dialTCP(vip string) result {
	start := time.Now()
	c, err := net.DialTimeout("tcp", vip, 3*time.Second)
	r := result{Took: time.Since(start)}
	if err != nil {
		return fail(r, err)
	}
	defer c.Close()
	r.Peer = peer(c.(*net.TCPConn))
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fail(r, err)
	}
	r.Backend = strings.TrimSpace(line)
	return r
}

// sendUDP is sendto and recvfrom on an unconnected socket.
func sendUDP(vip string) result {
	to, err := net.ResolveUDPAddr("udp", vip)
	if err != nil {
		return fail(result{}, err)
	}
	network := "udp4"
	if to.IP.To4() == nil {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, nil)
	if err != nil {
		return fail(result{}, err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.WriteToUDP([]byte("hello"), to); err != nil {
		return fail(result{Took: time.Since(start)}, err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	r := result{Took: time.Since(start)}
	if err != nil {
		return fail(r, err)
	}
	r.Backend, r.Peer = string(buf[:n]), from.String()
	return r
}

func holdUDP(vip string) (net.Conn, result) {
	c, err := net.Dial("udp", vip)
	if err != nil {
		return nil, fail(result{}, err)
	}
	r := exchange(c, result{Peer: peer(c.(*net.UDPConn))})
	if r.Err != "" {
		c.Close()
		return nil, r
	}
	return c, r
}

// exchange sends a datagram on c and reads the answer.
func exchange(c net.Conn, in result) (r result) {
	r = in
	if c == nil {
		r.Err = "no such socket"
		return r
	}
	start := time.Now()
	defer func() { r.Took = time.Since(start) }()
	if _, err := c.Write([]byte("hello")); err != nil {
		return fail(r, err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fail(r, err)
	}
	r.Backend = string(buf[:n])
	return r
}

// connectedUDP is connect, send and recv on a UDP socket.
func connectedUDP(vip string) result {
	start := time.Now()
	c, err := net.Dial("udp", vip)
	r := result{Took: time.Since(start)}
	if err != nil {
		return fail(r, err)
	}
	defer c.Close()
	r.Peer = peer(c.(*net.UDPConn))
	if _, err := c.Write([]byte("hello")); err != nil {
		return fail(r, err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fail(r, err)
	}
	r.Backend = string(buf[:n])
	return r
}

// loopTCP connects over and over for d.
func loopTCP(vip string, d time.Duration) result {
	r := result{Backends: map[string]int{}}
	for end := time.Now().Add(d); time.Now().Before(end); {
		one := dialTCP(vip)
		r.Count++
		if one.Err != "" {
			if r.Failed == 0 {
				r.Err, r.Errno = one.Err, one.Errno
			}
			r.Failed++
			continue
		}
		r.Backends[one.Backend]++
	}
	return r
}
