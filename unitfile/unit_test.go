package unitfile_test

import (
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/modes"
	"github.com/kube-outpost/kube-outpost/unitfile"
)

// TestModesPrivileges: the unit with a mode's drop-in grants the daemon
// each capability, system call and writable path the mode declares it
// needs (capabilities both as a bound and as ambient ones); and a mode
// with a Prepare has the privileged ExecStartPre that runs it.
func TestModesPrivileges(t *testing.T) {
	modes := proxy.Modes()
	if len(modes) == 0 {
		t.Fatal("no modes registered")
	}
	for _, m := range modes {
		keys := unitfile.Keys(unitfile.Unit + "\n" + unitfile.DropIn(m))
		for _, c := range m.Privileges.Capabilities {
			for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
				if !unitfile.Grants(keys, key, c) {
					t.Errorf("mode %s needs %s, which the unit's %s lacks, drop-in included", m.Name, c, key)
				}
			}
		}
		for _, c := range m.Privileges.SystemCalls {
			if !unitfile.Grants(keys, "SystemCallFilter", c) {
				t.Errorf("mode %s needs the system call %s, which the unit's SystemCallFilter lacks, drop-in included", m.Name, c)
			}
		}
		for _, p := range m.Privileges.ReadWritePaths {
			if !unitfile.Grants(keys, "ReadWritePaths", "-"+p) {
				t.Errorf("mode %s writes %s, which the unit's ReadWritePaths lacks, drop-in included", m.Name, p)
			}
		}
		if m.Prepare != nil && !strings.Contains(strings.Join(keys["ExecStartPre"], "\n"), "+/usr/bin/kube-outpost prepare ") {
			t.Errorf("mode %s has a Prepare, but the unit runs no privileged `kube-outpost prepare`", m.Name)
		}
	}
}

// TestSharedUnitNotWidened: what only the ebpf mode needs stays out of
// the unit every mode runs under, and the modes the unit serves as it is
// get no drop-in.
func TestSharedUnitNotWidened(t *testing.T) {
	keys := unitfile.Keys(unitfile.Unit)
	for _, c := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"} {
		if unitfile.Grants(keys, "CapabilityBoundingSet", c) {
			t.Errorf("the shared unit grants %s", c)
		}
	}
	if unitfile.Grants(keys, "SystemCallFilter", "bpf") {
		t.Error("the shared unit allows bpf()")
	}
	for _, name := range []string{"iptables", "nftables", "ipvs"} {
		if m := proxy.Lookup(config.Mode(name)); m != nil && unitfile.DropIn(m) != "" {
			t.Errorf("mode %s gets a drop-in:\n%s", name, unitfile.DropIn(m))
		}
	}
	m := proxy.Lookup("ebpf")
	if m == nil {
		t.Fatal("mode ebpf is not linked in")
	}
	d := unitfile.DropIn(m)
	for _, want := range []string{"[Service]\n", "CapabilityBoundingSet=CAP_BPF CAP_PERFMON\n",
		"AmbientCapabilities=CAP_BPF CAP_PERFMON\n", "SystemCallFilter=bpf\n", "ReadWritePaths=-/sys/fs/bpf\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("ebpf drop-in lacks %q:\n%s", want, d)
		}
	}
	// An empty assignment would reset the unit's list instead of adding
	// to it.
	for _, l := range strings.Split(d, "\n") {
		if strings.HasSuffix(l, "=") {
			t.Errorf("drop-in resets a list: %q", l)
		}
	}
}
