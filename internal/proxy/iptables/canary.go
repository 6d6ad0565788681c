package iptables

import (
	"context"
	"errors"
	"fmt"
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

// Missing implements proxy.Prober: what of the canaries is gone. It says
// nothing before the first successful sync, which writes them. It runs
// beside Sync, so it reads only the kernel and an atomic flag.
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
	return missing, nil
}
