package iptables

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// A canary chain in each table we write holds one rule that nothing jumps
// to. A firewall reload (`firewall-cmd --reload`, `iptables -t nat -F`,
// `nft flush ruleset`) takes it with our other rules, so finding it gone
// or empty says the table was flushed behind our back, within seconds,
// without reading the whole table. kube-proxy's KUBE-PROXY-CANARY is the
// idea; ours holds a rule too, because `-F` empties chains but keeps them.
var canaryTables = []string{"nat", "filter"}

const canaryRule = `-m comment --comment "kube-outpost canary: gone means this table was flushed" -j RETURN`

func renderCanaries(s *syncPass) {
	for _, t := range canaryTables {
		s.top.add(t, chainCanary, canaryRule)
	}
}

// Missing implements proxy.Prober: what of the canaries is gone, and which
// jumps into our chains. A reload that flushes a table between a full
// sync's listing of the hooks and its iptables-restore leaves our chains,
// the canary among them, rewritten but nothing jumping to them: the
// services are dark, and the canary alone cannot tell (firewalld 1.3
// flushes several times over one reload, so a repair meets the next
// flush). It says nothing before the first successful sync, which writes
// them. It reads the canaries and the few built-in chains we hook into,
// and runs beside Sync, so it reads only the kernel and atomics.
func (p *Proxier) Missing(ctx context.Context) ([]string, error) {
	if !p.canaries.Load() {
		return nil, nil
	}
	var missing []string
	for _, t := range canaryTables {
		rules, err := p.opt.Runner.ListChain(ctx, t, chainCanary)
		switch {
		case errors.Is(err, ErrNoChain):
			missing = append(missing, fmt.Sprintf("%s table: chain %s", t, chainCanary))
		case err != nil:
			return nil, err
		case len(rules) == 0:
			missing = append(missing, fmt.Sprintf("%s table: the rules of %s", t, chainCanary))
		}
	}
	if hooks := p.hooked.Load(); hooks != nil {
		for _, h := range *hooks {
			ok, err := HasJump(ctx, p.opt.Runner, h.table, h.chain, h.target)
			if err != nil {
				return nil, err
			}
			if !ok {
				missing = append(missing, fmt.Sprintf("%s table: the jump from %s to %s", h.table, h.chain, h.target))
			}
		}
	}
	if len(missing) > 0 {
		p.stale.Flushed()
	}
	return missing, nil
}

// HasJump says whether chain of table holds a rule that jumps to target;
// false when the chain is gone (a table that `nft flush ruleset` took).
func HasJump(ctx context.Context, r Runner, table, chain, target string) (bool, error) {
	rules, err := r.ListChain(ctx, table, chain)
	if errors.Is(err, ErrNoChain) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, rule := range rules {
		f := strings.Fields(rule)
		if i := indexOf(f, "-j"); i >= 0 && i+1 < len(f) && f[i+1] == target {
			return true, nil
		}
	}
	return false, nil
}
