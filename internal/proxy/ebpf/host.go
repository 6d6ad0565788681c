package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Cgroup2Mount finds where the cgroup v2 hierarchy is mounted: at
// /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid
// one; there is no default to assume.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return cgroup2In(bufio.NewScanner(f))
}

func cgroup2In(s *bufio.Scanner) (string, error) {
	mnts, err := mountsOf(s, "cgroup2")
	if err != nil {
		return "", err
	}
	if len(mnts) == 0 {
		return "", errors.New("no cgroup v2 hierarchy is mounted (mode ebpf attaches to one)")
	}
	return mnts[0], nil
}

// mountsOf lists the mount points of file systems of type fstype, in
// the mount table's order.
func mountsOf(s *bufio.Scanner, fstype string) ([]string, error) {
	var out []string
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && g[0] == fstype {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out, s.Err()
}

// ensureBPFFS mounts a bpffs at dir unless one is mounted there: the
// pins must be on one, and a host whose systemd did not mount it (this
// machine kind's) would otherwise refuse every pin. Only the privileged
// prepare step can mount; the sandboxed daemon sees the mount through its
// private mount namespace's propagation from the host.
func ensureBPFFS(dir string) (mounted bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	mnts, err := mountsOf(bufio.NewScanner(f), "bpf")
	f.Close()
	if err != nil {
		return false, err
	}
	if slices.Contains(mnts, dir) {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	if err := unix.Mount("bpf", dir, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return false, fmt.Errorf("mounting a bpffs at %s: %w", dir, err)
	}
	return true, nil
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline
// and backslash.
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// OwnNetnsCookie is the cookie of this thread's network namespace, as
// bpf_get_netns_cookie gives it to the hooks (SO_NETNS_COOKIE, Linux 5.14).
func OwnNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("reading the network namespace's cookie (SO_NETNS_COOKIE): %w", err)
	}
	return c, nil
}
