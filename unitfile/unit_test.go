package unitfile_test

import (
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/modes"
	"github.com/kube-outpost/kube-outpost/unitfile"
)

// TestModesPrivileges: the one unit serves every mode, so it grants the
// daemon each capability any mode declares it needs, both as a bound and
// as an ambient capability; and a mode with a Prepare has the privileged
// ExecStartPre that runs it.
func TestModesPrivileges(t *testing.T) {
	keys := map[string][]string{}
	for _, l := range strings.Split(unitfile.Unit, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(k, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	has := func(key, capability string) bool {
		for _, v := range keys[key] {
			if strings.Contains(" "+v+" ", " "+capability+" ") {
				return true
			}
		}
		return false
	}
	modes := proxy.Modes()
	if len(modes) == 0 {
		t.Fatal("no modes registered")
	}
	for _, m := range modes {
		for _, c := range m.Privileges.Capabilities {
			for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
				if !has(key, c) {
					t.Errorf("mode %s needs %s, which the unit's %s lacks", m.Name, c, key)
				}
			}
		}
		if m.Prepare != nil && !strings.Contains(strings.Join(keys["ExecStartPre"], "\n"), "+/usr/bin/kube-outpost prepare ") {
			t.Errorf("mode %s has a Prepare, but the unit runs no privileged `kube-outpost prepare`", m.Name)
		}
	}
}
