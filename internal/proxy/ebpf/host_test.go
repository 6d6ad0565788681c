package ebpf

import (
	"bufio"
	"strings"
	"testing"
)

func TestCgroup2In(t *testing.T) {
	for _, c := range []struct{ name, mountinfo, want string }{
		{"hybrid", `25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd`, "/sys/fs/cgroup/unified"},
		{"pure v2", `30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot`, "/sys/fs/cgroup"},
		{"optional fields and an escaped space", `31 1 0:27 / /mnt/cg\040two rw shared:5 master:1 - cgroup2 none rw`, "/mnt/cg two"},
		{"none", `25 30 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu`, ""},
	} {
		got, err := cgroup2In(bufio.NewScanner(strings.NewReader(c.mountinfo)))
		if got != c.want || (err != nil) != (c.want == "") {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}
