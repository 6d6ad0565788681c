//go:build kernel

// Benchmarks against the real kernel, the same for every mode
// (internal/proxy/kernelbench). Each runs in a bench lab: the hooks attach
// to a throw-away child of the cgroup v2 hierarchy into which the
// benchmark process moves itself, so that its own connect() calls are
// translated, the pins go to a bpffs mounted on a temporary directory, and
// the network namespace translated is the one it runs in, which `make
// bench` makes for it:
//
//	ip netns add b && ip netns exec b go test -tags kernel -run '^$' -bench Kernel ./internal/proxy/ebpf/
package ebpf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/kernelbench"
)

// benchLab is where one benchmark's backends attach and pin. Unlike the
// tests' lab it holds the benchmark process itself, not a client: the
// kernelbench probes connect from the benchmark's own goroutines.
type benchLab struct {
	cgroup string
	pinDir string
	cookie uint64
}

// newBenchLab moves this process into a new kube-outpost-test-* child of
// the cgroup v2 mount (never the root: the hooks attach to that child
// only) and mounts a bpffs on a temporary directory. At the benchmark's
// end the process goes back to its cgroup, and the child, the bpffs and,
// when the benchmark mounted it, the cgroup v2 hierarchy are removed.
func newBenchLab(b *testing.B) *benchLab {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	mnt, err := Cgroup2Mount()
	if err != nil {
		// ip netns exec gives the namespace a sysfs of its own,
		// without the cgroup mounts: the hierarchy is mounted here,
		// in ip netns exec's mount namespace.
		mnt = b.TempDir()
		if err := unix.Mount("cgroup2", mnt, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			b.Skipf("no cgroup v2 hierarchy, and mounting one: %v", err)
		}
		b.Cleanup(func() { unmount(b, mnt) })
	}
	own, err := ownCgroup()
	if err != nil {
		b.Fatal(err)
	}
	id := fmt.Sprintf("%08x", rand.Uint32())
	l := &benchLab{cgroup: filepath.Join(mnt, "kube-outpost-test-"+id)}
	if err := os.Mkdir(l.cgroup, 0o755); err != nil {
		b.Fatal(err)
	}
	// Registered before the move back, so it runs after it.
	b.Cleanup(func() {
		if err := os.Remove(l.cgroup); err != nil {
			b.Errorf("removing the benchmark's cgroup: %v", err)
		}
	})
	if err := moveTo(filepath.Join(mnt, own)); err != nil {
		b.Fatalf("cannot move back to cgroup %s, so not leaving it: %v", own, err)
	}
	if err := moveTo(l.cgroup); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := moveTo(filepath.Join(mnt, own)); err != nil {
			b.Errorf("moving back to cgroup %s: %v", own, err)
		}
	})
	if now, err := ownCgroup(); err != nil || now != "/"+filepath.Base(l.cgroup) {
		b.Fatalf("not in the benchmark's cgroup after moving: %q, %v", now, err)
	}
	bpffs := b.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		b.Fatalf("mounting a bpffs at %s: %v", bpffs, err)
	}
	l.pinDir = filepath.Join(bpffs, "kube-outpost")
	b.Cleanup(func() {
		if left, _ := os.ReadDir(l.pinDir); len(left) > 0 {
			b.Errorf("pins left in %s: %v", l.pinDir, left)
		}
		unmount(b, bpffs)
	})
	if l.cookie, err = OwnNetnsCookie(); err != nil {
		b.Fatal(err)
	}
	return l
}

// backend is a Proxier on the lab's cgroup, bpffs and namespace. The
// benchmarks end each with its Cleanup, except Restart's later ones,
// which take over the pins of the first: those let go of their handles
// at the end.
func (l *benchLab) backend(b *testing.B) proxy.Backend {
	p := New(Options{PinDir: l.pinDir, Cgroup: l.cgroup, NetnsCookie: l.cookie})
	b.Cleanup(p.Close)
	return p
}

// ownCgroup is this process's cgroup in the v2 hierarchy, from
// /proc/self/cgroup ("0::/path").
func ownCgroup() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", errors.New("no cgroup v2 line in /proc/self/cgroup")
}

// moveTo moves this whole process (every thread) into the cgroup dir.
func moveTo(dir string) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func unmount(b *testing.B, dir string) {
	if err := unix.Unmount(dir, 0); err != nil {
		b.Errorf("unmounting %s: %v", dir, err)
	}
}

// BenchmarkKernelFullSync: the first sync of 10,000 services x 10
// endpoints into empty maps, attaching the hooks, and the memory it needs.
func BenchmarkKernelFullSync(b *testing.B) { kernelbench.FullSync(b, newBenchLab(b).backend) }

// BenchmarkKernelRestart: a restarted daemon's first sync, over the maps
// and links the last one pinned.
func BenchmarkKernelRestart(b *testing.B) { kernelbench.Restart(b, newBenchLab(b).backend) }

// BenchmarkKernelOneChange: one service's endpoints change among 10,000,
// and the first connect to new endpoints.
func BenchmarkKernelOneChange(b *testing.B) { kernelbench.OneChange(b, newBenchLab(b).backend) }

// BenchmarkKernelAddService: one service appears among 10,000.
func BenchmarkKernelAddService(b *testing.B) { kernelbench.AddService(b, newBenchLab(b).backend) }

// BenchmarkKernelFirstPacket: connect time to a ClusterIP with 10 and with
// 10,000 services programmed, each connect translated by the socket hook.
func BenchmarkKernelFirstPacket(b *testing.B) { kernelbench.FirstPacket(b, newBenchLab(b).backend) }
