//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	koebpf "github.com/kube-outpost/kube-outpost/internal/proxy/ebpf"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// A mode that pins its objects on the bpffs and attaches programs to a
// cgroup (ebpf mode, by its declared privileges) runs in a lab whose
// host namespace has a bpffs of its own (lab.BPFHost), and its daemons
// attach to a throw-away cgroup that holds this test process and so every
// process it starts: the lab's clients dial from this process's threads,
// and `ip netns exec` children inherit its cgroup. Its hooks translate
// only the sockets of the daemon's own network namespace, the lab's host,
// so the pods' servers (threads of this process too, in their own
// namespaces) and everything else are untouched. The machine's own
// cgroup root and /sys/fs/bpf are never used, and TestMain checks at the
// end that they are as they were.
var (
	// bpfHost is the lab.BPFHost of every lab of the suite; nil for
	// modes that need none.
	bpfHost *lab.BPFHost
	// testCgroup is the throw-away cgroup, and the ebpf_cgroup of every
	// daemon config (withHostKeys); "" without bpfHost.
	testCgroup string
)

// needsBPFHost says whether mode m writes the bpffs, as its unit
// privileges declare.
func needsBPFHost(m string) bool {
	pm := proxy.Lookup(config.Mode(m))
	return pm != nil && slices.Contains(pm.Privileges.ReadWritePaths, config.DefaultBPFFS)
}

// labOptions is opts with what every lab of the suite needs.
func labOptions(opts lab.Options) lab.Options {
	opts.BPF = bpfHost
	return opts
}

// setUpBPFHost makes the throw-away cgroup, moves this process into it
// and returns what undoes that, and what checks that the machine's own
// cgroup root and /sys/fs/bpf did not change meanwhile.
func setUpBPFHost() (done func() error, err error) {
	mnt, err := koebpf.Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	removeStaleCgroups(mnt)
	before, err := machineBPFState(mnt)
	if err != nil {
		return nil, err
	}
	home, err := ownCgroup(mnt)
	if err != nil {
		return nil, err
	}
	cg := filepath.Join(mnt, fmt.Sprintf("kube-outpost-test-e2e-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return nil, err
	}
	// One pid moves every thread of the process.
	if err := moveTo(cg); err != nil {
		os.Remove(cg)
		return nil, err
	}
	bpfHost, testCgroup = &lab.BPFHost{Cgroup2: mnt}, cg
	fmt.Printf("e2e: mode %s: the hooks attach to %s, which holds this process; every lab host has a bpffs of its own\n", mode, cg)
	return func() error {
		var errs []error
		if err := moveTo(home); err != nil {
			errs = append(errs, fmt.Errorf("moving back to %s: %w", home, err))
		}
		// The labs' processes are killed by now, but may not all be
		// reaped yet.
		for i := 0; ; i++ {
			err := os.Remove(cg)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if i == 50 {
				errs = append(errs, fmt.Errorf("removing the test cgroup: %w (cgroup.procs: %s)", err, readOr(filepath.Join(cg, "cgroup.procs"))))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		after, err := machineBPFState(mnt)
		if err != nil {
			errs = append(errs, err)
		} else if after != before {
			errs = append(errs, fmt.Errorf("the machine's cgroup root or /sys/fs/bpf changed during the suite:\nbefore:\n%s\nafter:\n%s", before, after))
		}
		return errors.Join(errs...)
	}, nil
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

// removeStaleCgroups removes the test cgroups of suites that died
// without removing theirs: empty once their processes are gone.
func removeStaleCgroups(mnt string) {
	entries, _ := os.ReadDir(mnt)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "kube-outpost-test-e2e-")
		pid, err := strconv.Atoi(rest)
		if !ok || err != nil || !e.IsDir() || unix.Kill(pid, 0) == nil {
			continue
		}
		if err := os.Remove(filepath.Join(mnt, e.Name())); err == nil {
			fmt.Printf("e2e: removed the cgroup %s of a suite that died\n", e.Name())
		}
	}
}

// machineBPFState is what the suite must not change on the machine: the
// programs attached to the cgroup v2 root at ebpf mode's hooks, and
// /sys/fs/bpf (whether a bpffs is mounted there, and what it holds).
func machineBPFState(mnt string) (string, error) {
	var b strings.Builder
	f, err := os.Open(mnt)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, at := range []ebpf.AttachType{
		ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
		ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP6Sendmsg,
		ebpf.AttachCGroupUDP4Recvmsg, ebpf.AttachCGroupUDP6Recvmsg,
		ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername,
	} {
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
