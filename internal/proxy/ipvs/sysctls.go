package ipvs

import (
	"fmt"
	"slices"
	"strings"
)

// checkSysctls puts the IPVS sysctls back where prepare set them, on every
// full sync: a `sysctl --system` or an admin may have reset them. In the
// unit's sandbox /proc/sys is read-only, so a reset one cannot be fixed
// from here; that must not fail the sync (the virtual servers are still
// right, and failing would leave every later change unprogrammed), so it
// is reported instead: one log line when the set of drifted sysctls
// changes, and in status (Warnings) until prepare runs again.
func (p *Proxier) checkSysctls() {
	var drift []string
	for _, s := range sysctls {
		if err := p.opt.Kernel.SetSysctl(s.name, s.value); err != nil {
			drift = append(drift, fmt.Sprintf("%s is not %s and cannot be set by the daemon (%v): restart the unit, "+
				"whose prepare step sets it", strings.ReplaceAll(s.name, "/", "."), s.value, err))
		}
	}
	before := p.Warnings()
	if !slices.Equal(drift, before) {
		if len(drift) > 0 {
			p.log.Warn("IPVS sysctls differ from what prepare set; the rules are synced, but IPVS traffic may not be NATed back",
				"ipv6", p.opt.IPv6, "sysctls", drift)
		} else if len(before) > 0 {
			p.log.Info("IPVS sysctls are as prepare set them again", "ipv6", p.opt.IPv6)
		}
	}
	p.drift.Store(&drift)
}

// Warnings implements proxy.Warner: what is wrong on this host that a sync
// cannot fix. Status calls it beside Sync.
func (p *Proxier) Warnings() []string {
	if d := p.drift.Load(); d != nil {
		return slices.Clone(*d)
	}
	return nil
}
