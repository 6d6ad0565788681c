//go:build kernel

package ebpf

// The client of the kernel tests: a process started in the lab's network
// namespace and moved into its cgroup, which makes the connections a test
// asks for on stdin and answers each with a JSON line.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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
