//go:build linux

package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/config"
	koebpf "github.com/kube-outpost/kube-outpost/internal/proxy/ebpf"
)

// Cgroup is a throw-away child of the cgroup v2 hierarchy,
// kube-outpost-test-<kind>-<pid>, that holds the test process, and so
// every process it starts from then on (`ip netns exec` children, the
// labs' daemons) and every probe it makes on its own threads (the lab's
// clients, Node.Dial). ebpf mode's daemons of a test attach their hooks
// there (ebpf_cgroup), never to the machine's cgroup root: the hooks then
// translate the test's own connects, and only those of the daemon's own
// network namespace (the hooks compare its cookie), so that the pods'
// servers, threads of the test process too, are untouched.
type Cgroup struct {
	// Path is the cgroup's directory: ebpf_cgroup for the daemons.
	Path string
	// Mount is where the machine mounts the cgroup v2 hierarchy
	// (BPFHost.Cgroup2).
	Mount string

	home   string // the cgroup this process came from
	before string // machineBPFState at the start
}

// EnterCgroup makes the throw-away cgroup of kind ("e2e", "bench"),
// removing first those of earlier test processes of that kind that died
// without removing theirs (log says which), and moves this process into
// it. Close moves it back.
func EnterCgroup(kind string, log io.Writer) (*Cgroup, error) {
	mnt, err := koebpf.Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	prefix := "kube-outpost-test-" + kind + "-"
	removeStaleCgroups(mnt, prefix, log)
	before, err := machineBPFState(mnt)
	if err != nil {
		return nil, err
	}
	home, err := ownCgroup(mnt)
	if err != nil {
		return nil, err
	}
	cg := filepath.Join(mnt, prefix+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return nil, err
	}
	// One pid moves every thread of the process.
	if err := moveTo(cg); err != nil {
		os.Remove(cg)
		return nil, err
	}
	return &Cgroup{Path: cg, Mount: mnt, home: home, before: before}, nil
}

// BPFHost is the Options.BPF of a lab whose daemons attach to c.
func (c *Cgroup) BPFHost() *BPFHost { return &BPFHost{Cgroup2: c.Mount} }

// Close moves this process back to its cgroup and removes c, once the
// labs are closed (their processes are in c), and checks that the
// machine's own cgroup root and /sys/fs/bpf did not change meanwhile.
func (c *Cgroup) Close() error {
	var errs []error
	if err := moveTo(c.home); err != nil {
		errs = append(errs, fmt.Errorf("moving back to %s: %w", c.home, err))
	}
	// The labs' processes are killed by now, but may not all be reaped
	// yet.
	for i := 0; ; i++ {
		err := os.Remove(c.Path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			break
		}
		if i == 50 {
			errs = append(errs, fmt.Errorf("removing the test cgroup: %w (cgroup.procs: %s)", err, readOr(filepath.Join(c.Path, "cgroup.procs"))))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	after, err := machineBPFState(c.Mount)
	if err != nil {
		errs = append(errs, err)
	} else if after != c.before {
		errs = append(errs, fmt.Errorf("the machine's cgroup root or /sys/fs/bpf changed while the test ran:\nbefore:\n%s\nafter:\n%s", c.before, after))
	}
	return errors.Join(errs...)
}

func moveTo(cg string) error {
	return os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func readOr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

// ownCgroup is the cgroup v2 directory this process is in.
func ownCgroup(mnt string) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			return filepath.Join(mnt, rest), nil
		}
	}
	return "", fmt.Errorf("/proc/self/cgroup has no cgroup v2 line:\n%s", b)
}

// removeStaleCgroups removes the cgroups <prefix><pid> of test processes
// that died without removing theirs: empty once their processes are gone.
func removeStaleCgroups(mnt, prefix string, log io.Writer) {
	entries, _ := os.ReadDir(mnt)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		pid, err := strconv.Atoi(rest)
		if !ok || err != nil || !e.IsDir() || unix.Kill(pid, 0) == nil {
			continue
		}
		if err := os.Remove(filepath.Join(mnt, e.Name())); err == nil && log != nil {
			fmt.Fprintf(log, "lab: removed the cgroup %s of a test process that died\n", e.Name())
		}
	}
}

// machineBPFState is what a test must not change on the machine: the
// programs attached to the cgroup v2 root at ebpf mode's hooks, and
// /sys/fs/bpf (whether a bpffs is mounted there, and what it holds).
func machineBPFState(mnt string) (string, error) {
	var b strings.Builder
	f, err := os.Open(mnt)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, at := range koebpf.HookAttachTypes() {
		r, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			return "", fmt.Errorf("programs attached to %s at %s: %w", mnt, at, err)
		}
		var ids []string
		for _, p := range r.Programs {
			ids = append(ids, fmt.Sprint(p.ID))
		}
		fmt.Fprintf(&b, "%s at %s: %v\n", mnt, at, ids)
	}
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer mi.Close()
	sc := bufio.NewScanner(mi)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 5 && strings.HasPrefix(f[4], config.DefaultBPFFS) {
			fmt.Fprintf(&b, "mounted at %s: %s\n", f[4], sc.Text()[strings.Index(sc.Text(), " - ")+3:])
		}
	}
	entries, err := os.ReadDir(config.DefaultBPFFS)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, e := range entries {
		fmt.Fprintf(&b, "%s/%s\n", config.DefaultBPFFS, e.Name())
	}
	return b.String(), nil
}
