package unitfile

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// DropInDir is where systemd reads drop-ins for the unit that override
// both the packaged and the tarball-installed unit.
const DropInDir = "/etc/systemd/system/kube-outpost.service.d"

// DropInName is the one drop-in kube-outpost writes there: one name for
// every mode, so that switching modes replaces it instead of stacking
// another mode's grants on top.
const DropInName = "50-mode.conf"

// DropIn is the unit drop-in that grants modes what the shared unit does
// not: the unit grants what every mode of the common kind needs, and a
// mode that needs more (ebpf: CAP_BPF, the bpf() system call, the bpffs)
// gets it on the hosts that run it rather than on all of them. The first
// mode is the configured one; the others are modes whose objects are
// still on the host, which the daemon removes once the configured mode
// serves (make before break) and needs their privileges for. "" when the
// unit grants them everything.
func DropIn(modes ...*proxy.Mode) string {
	granted := Keys(Unit)
	var caps, calls, paths, names []string
	add := func(list *[]string, key, item string) {
		if !Grants(granted, key, item) && !slices.Contains(*list, item) {
			*list = append(*list, item)
		}
	}
	for _, m := range modes {
		n := len(caps) + len(calls) + len(paths)
		for _, c := range m.Privileges.Capabilities {
			if !Grants(granted, "AmbientCapabilities", c) {
				add(&caps, "CapabilityBoundingSet", c)
			}
		}
		for _, c := range m.Privileges.SystemCalls {
			add(&calls, "SystemCallFilter", c)
		}
		for _, p := range m.Privileges.ReadWritePaths {
			add(&paths, "ReadWritePaths", "-"+p)
		}
		if len(caps)+len(calls)+len(paths) > n {
			names = append(names, fmt.Sprintf("%q", m.Name))
		}
	}
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by kube-outpost for mode %s: what it needs beyond the\n", strings.Join(names, " and "))
	b.WriteString("# shared unit. Rewritten when the mode changes; do not edit.\n[Service]\n")
	// Each of these keys adds to the unit's own list (an empty value
	// would reset it, which this never writes).
	if len(caps) > 0 {
		fmt.Fprintf(&b, "CapabilityBoundingSet=%s\n", strings.Join(caps, " "))
		fmt.Fprintf(&b, "AmbientCapabilities=%s\n", strings.Join(caps, " "))
	}
	if len(calls) > 0 {
		fmt.Fprintf(&b, "SystemCallFilter=%s\n", strings.Join(calls, " "))
	}
	if len(paths) > 0 {
		fmt.Fprintf(&b, "ReadWritePaths=%s\n", strings.Join(paths, " "))
	}
	return b.String()
}

// Keys parses a unit (or drop-in) into its keys' values, in order.
func Keys(unit string) map[string][]string {
	keys := map[string][]string{}
	for _, l := range strings.Split(unit, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			keys[k] = append(keys[k], v)
		}
	}
	return keys
}

// Grants says whether one of key's values lists item. A system call
// named in a @group is not looked up: only bare names count, so a group
// never hides a call the drop-in must add.
func Grants(keys map[string][]string, key, item string) bool {
	for _, v := range keys[key] {
		if slices.Contains(strings.Fields(v), item) {
			return true
		}
	}
	return false
}
