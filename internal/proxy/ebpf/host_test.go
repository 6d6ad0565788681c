package ebpf

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
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

// TestAttachCgroup: a configured cgroup must be a directory of the
// cgroup v2 mount; none is its root.
func TestAttachCgroup(t *testing.T) {
	mnt := t.TempDir()
	if err := os.MkdirAll(filepath.Join(mnt, "app.slice"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := attachCgroup(mnt, ""); got != mnt || err != nil {
		t.Errorf("none: %q, %v", got, err)
	}
	if got, err := attachCgroup(mnt, filepath.Join(mnt, "app.slice")); got != filepath.Join(mnt, "app.slice") || err != nil {
		t.Errorf("a child: %q, %v", got, err)
	}
	for _, c := range []struct{ path, want string }{
		{"/sys/fs/cgroup/cpu,cpuacct", "is not in the cgroup v2 hierarchy, which is mounted at " + mnt},
		{mnt + "/../x", "is not in the cgroup v2 hierarchy"},
		{filepath.Join(mnt, "gone.slice"), "no such cgroup"},
	} {
		if _, err := attachCgroup(mnt, filepath.Clean(c.path)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.path, err, c.want)
		}
	}
}

// TestPinDirs: cleanup finds any pin directory a run used under the
// bpffs by its ko_config pin, and leaves another tool's directory alone
// even when it has pins named like ours.
func TestPinDirs(t *testing.T) {
	root := t.TempDir()
	for name, files := range map[string][]string{
		"kube-outpost": {"ko_config", "ko_svc4", "link_connect4"},
		"ko-2":         {"ko_config"},
		"tc":           {"link_connect4", "globals"},
		"empty":        nil,
	} {
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(root, name, f), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := pinDirs(root)
	want := []string{filepath.Join(root, "ko-2"), filepath.Join(root, "kube-outpost")}
	if !slices.Equal(got, want) {
		t.Errorf("pinDirs = %q, want %q", got, want)
	}
}

// TestMountsOf: the bpffs mounts are found by type, wherever they are.
func TestMountsOf(t *testing.T) {
	mi := `25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
40 22 0:35 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:15 - bpf bpf rw,mode=700
41 22 0:36 / /tmp/with\040space rw,relatime - bpf bpf rw
`
	got, err := mountsOf(bufio.NewScanner(strings.NewReader(mi)), "bpf")
	if err != nil || !slices.Equal(got, []string{"/sys/fs/bpf", "/tmp/with space"}) {
		t.Errorf("mountsOf = %q, %v", got, err)
	}
}
