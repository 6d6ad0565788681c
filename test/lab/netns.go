//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// netnsDir is where `ip netns add` bind-mounts named namespaces; netns.GetFromName
// reads the same place.
const netnsDir = "/run/netns"

// InNetns runs fn on a locked OS thread switched into the named network namespace
// and switches the thread back afterwards. Sockets created by fn stay in ns for
// their whole life, so this is how the lab dials from, and listens in, namespaces
// without running a helper process there.
//
// setns(2) only changes the calling thread, hence the lock. If switching back
// fails, the thread is left locked: the Go runtime then destroys it when the
// goroutine exits instead of handing a thread in the wrong namespace to other
// goroutines. (Threads the runtime creates meanwhile are cloned from a clean
// template thread, not from this one.)
func InNetns(ns string, fn func() error) (err error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	// Deferred so that the thread is restored also when fn panics.
	defer func() {
		if rerr := netns.Set(orig); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore netns after %s (thread stays locked and will exit): %w", ns, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// dialIn dials from inside netns ns. Only socket(2) and connect(2) need the
// namespace; the connection then works from any goroutine.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetns(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listenIn opens a TCP listener inside netns ns.
func listenIn(ns, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := InNetns(ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// listenPacketIn opens a UDP socket inside netns ns.
func listenPacketIn(ns, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := InNetns(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// writeSysctlIn writes a per-namespace sysctl such as net/ipv4/ip_forward.
// /proc/sys/net resolves to the namespace of the thread that opens it.
func writeSysctlIn(ns, key, value string) error {
	return InNetns(ns, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
	})
}

// ipCmd runs `ip args...` and returns an error carrying its output. Every call
// a local lab makes either creates/deletes a named namespace or carries
// `-n <ns>`, so nothing is ever configured in the machine's own namespace (a
// remote lab's uplink is the one exception, see remote.go).
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipIn runs `ip -n ns args...`.
func ipIn(ns string, args ...string) error {
	return ipCmd(append([]string{"-n", ns}, args...)...)
}

// addNetns creates a namespace with loopback up (many programs, etcd and the
// apiserver included, expect 127.0.0.1 to work).
func addNetns(name string) error {
	if err := ipCmd("netns", "add", name); err != nil {
		return err
	}
	return ipIn(name, "link", "set", "lo", "up")
}

// vethInto creates a veth pair whose one end (outer) is enslaved to bridge in
// bridgeNS and whose other end is named eth0 inside ns. The pair is created
// directly inside bridgeNS (`ip -n`), never in the machine's namespace.
func vethInto(bridgeNS, bridge, outer, ns string) error {
	if err := ipIn(bridgeNS, "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
		return err
	}
	if err := ipIn(bridgeNS, "link", "set", outer, "master", bridge, "up"); err != nil {
		return err
	}
	return ipIn(ns, "link", "set", "eth0", "up")
}

// bridgeMAC is the MAC address of a lab bridge whose own IPv4 address is a:
// 02:00 followed by a's four bytes (locally administered, unicast, and
// unlike any veth's random one). Every lab bridge is created with one.
//
// A bridge without an address of its own takes the lowest of its ports'
// and changes it whenever a port with a lower one joins or that port
// leaves (AddNode's veth joining infra, AddPod's and RemovePod's on a pods
// bridge). Neighbours that cached the old address then send into the void:
// a frame to a port's address reaches the bridge as PACKET_OTHERHOST,
// which IP and ARP drop, unicast ARP probes included. The host's entry for
// the router stays REACHABLE for up to 45 s, then STALE until its next
// packet, then fails its probes; a TCP connect through the router that
// began meanwhile has no SYN left to send by then and times out after
// ~130 s, as TestLab/remove-pod did when the node joined infra.
func bridgeMAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// listNetns returns the names of all named network namespaces on the machine.
func listNetns() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// netnsPids lists processes whose network namespace is ns.
func netnsPids(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNetns kills every process still living in ns (a namespace outlives its
// name while processes use it), then removes the name.
func deleteNetns(ns string) error {
	self := os.Getpid()
	for _, pid := range netnsPids(ns) {
		if pid != self {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	err := ipCmd("netns", "delete", ns)
	if err != nil {
		if _, serr := os.Stat(netnsDir + "/" + ns); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// labNameRE matches the namespaces and directories of any lab:
// "ko<pid>[x<n>]-<rest>".
var labNameRE = regexp.MustCompile(`^ko([0-9]+)(x[0-9]+)?-`)

const (
	dirMarker  = ".kube-outpost-lab" // in every lab Dir
	keptMarker = ".kept"             // in a Dir kept on purpose (KO_LAB_KEEP=1)
)

// deadOwner reports whether name belongs to a lab whose process is gone. The
// pid in the name tells; a reused pid only delays the cleanup.
func deadOwner(name string) (int, bool) {
	m := labNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	pid, _ := strconv.Atoi(m[1])
	return pid, pid != os.Getpid() && !processAlive(pid)
}

// cleanupStaleLabs deletes what labs whose test process died without Close
// (e.g. killed at a go test timeout) left behind: their namespaces, with any
// process still inside, and their directories, unless kept with KO_LAB_KEEP=1.
// Their own children are already gone thanks to Pdeathsig.
func cleanupStaleLabs(logf func(string, ...any)) {
	names, err := listNetns()
	if err != nil {
		logf("list netns: %v", err)
	}
	for _, name := range names {
		if pid, dead := deadOwner(name); dead {
			logf("removing netns %s of dead lab (pid %d)", name, pid)
			if err := deleteNetns(name); err != nil {
				logf("%v", err)
			}
		}
	}
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		dir := filepath.Join(os.TempDir(), e.Name())
		if _, dead := deadOwner(e.Name()); !dead || !e.IsDir() ||
			!exists(filepath.Join(dir, dirMarker)) || exists(filepath.Join(dir, keptMarker)) {
			continue
		}
		logf("removing %s of dead lab", dir)
		// The bpffs of its host and nodes (Options.BPF) first, not
		// their pins one by one.
		if err := unmountBPFFSes(dir); err != nil {
			logf("%v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("%v", err)
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
