//go:build linux

package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountBPF mounts the host's bpffs on <Dir>/bpffs and writes the script
// that gives each command in the host namespace its mounts (BPFHost).
func (l *Lab) mountBPF(h BPFHost) error {
	cg := filepath.Clean(h.Cgroup2)
	if !filepath.IsAbs(cg) {
		return fmt.Errorf("lab: BPFHost.Cgroup2 %q is not an absolute path", h.Cgroup2)
	}
	l.bpf = &BPFHost{Cgroup2: cg}
	dir := filepath.Join(l.Dir, "bpffs")
	script, err := l.bpfMounts(dir)
	if err != nil {
		return err
	}
	l.BPFFS, l.hostMounts = dir, script
	return nil
}

// bpfMounts mounts a bpffs on dir, a directory it makes, and returns the
// script that makes Options.BPF's mounts with that bpffs at /sys/fs/bpf
// and execs its arguments.
func (l *Lab) bpfMounts(dir string) (string, error) {
	cg := l.bpf.Cgroup2
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	if err := unix.Mount("bpf", dir, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return "", fmt.Errorf("lab: mounting a bpffs on %s: %w", dir, err)
	}
	var script []string
	switch {
	case cg == "/sys/fs/cgroup":
		script = append(script, "mount -t cgroup2 cgroup2 /sys/fs/cgroup")
	case strings.HasPrefix(cg, "/sys/fs/cgroup/"):
		// A hybrid host: the v1 controllers are of no use here, the
		// fresh /sys has no directory to mount the v2 hierarchy on,
		// and sysfs makes none; a tmpfs holds it, as on the host.
		script = append(script, "mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup", "mkdir -p "+shellQuote(cg),
			"mount -t cgroup2 cgroup2 "+shellQuote(cg))
	case strings.HasPrefix(cg, "/sys/"):
		return "", fmt.Errorf("lab: the cgroup v2 hierarchy is mounted at %s, which a fresh /sys has no directory for", cg)
	default:
		// Outside /sys: `ip netns exec` leaves it as it is.
	}
	script = append(script, "mount --bind "+shellQuote(dir)+" /sys/fs/bpf", `exec "$@"`)
	return "set -e\n" + strings.Join(script, "\n"), nil
}

// mountsOf is the mount script of the commands run in namespace ns (the
// host's or a node's, with Options.BPF); "" for none.
func (l *Lab) mountsOf(ns string) string {
	if ns == l.HostNS {
		return l.hostMounts
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.nodes {
		if n.NS == ns {
			return n.mounts
		}
	}
	return ""
}

// unmountBPFFSes unmounts the bpffs of every node of a lab whose
// directory is dir, and its host's (<dir>/bpffs-node-*, <dir>/bpffs).
func unmountBPFFSes(dir string) error {
	dirs, _ := filepath.Glob(filepath.Join(dir, "bpffs-node-*"))
	var errs []error
	for _, d := range append(dirs, filepath.Join(dir, "bpffs")) {
		errs = append(errs, unmountBPFFS(d))
	}
	return errors.Join(errs...)
}

// unmountBPFFS unmounts a lab's bpffs, and removes its directory so that
// nothing can be written where it was.
func unmountBPFFS(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lab: unmounting the bpffs on %s: %w", dir, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
