package ipvs

import (
	"context"
	"errors"
	"fmt"

	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// Missing implements proxy.Prober: what of ours a firewall reload or an
// admin removed since the last successful sync. Our two chains always
// hold rules (the refusals, the masquerade rule), so a flushed table shows
// as a missing or empty chain; a VIP taken off outpost0 stops IPVS from
// receiving its packets. It reads one chain per table and the addresses of
// one interface, and runs beside Sync, so it reads only the kernel and an
// atomic.
func (p *Proxier) Missing(ctx context.Context) ([]string, error) {
	vips := p.bound.Load()
	if vips == nil {
		return nil, nil // no sync yet
	}
	var missing []string
	for _, c := range []struct{ table, chain string }{{"filter", chainFilter}, {"nat", chainPostrouting}} {
		rules, err := p.opt.IPTables.ListChain(ctx, c.table, c.chain)
		switch {
		case errors.Is(err, iptables.ErrNoChain):
			missing = append(missing, fmt.Sprintf("%s table: chain %s", c.table, c.chain))
		case err != nil:
			return nil, err
		case len(rules) == 0:
			missing = append(missing, fmt.Sprintf("%s table: the rules of %s", c.table, c.chain))
		}
	}
	addrs, err := p.opt.Kernel.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, a := range addrs {
		have[a.String()] = true
	}
	gone := 0
	for _, v := range *vips {
		if !have[v] {
			if gone < 3 {
				missing = append(missing, fmt.Sprintf("ClusterIP %s on %s", v, Interface))
			}
			gone++
		}
	}
	if gone > 3 {
		missing = append(missing, fmt.Sprintf("and %d more ClusterIPs on %s", gone-3, Interface))
	}
	return missing, nil
}
