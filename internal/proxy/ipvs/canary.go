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
// receiving its packets. The jumps into our chains are looked at too: a
// reload that flushes a table between a full sync's listing of the hooks
// and its iptables-restore leaves our chains rewritten but nothing jumping
// to them (firewalld 1.3 flushes several times over one reload, so a
// repair meets the next flush), and without the masquerade hook a local
// client's connection leaves from the VIP, whose replies never come back.
// It reads our two chains and the two built-in chains that hold the hooks,
// and the addresses of one interface, and runs beside Sync, so it reads
// only the kernel and an atomic.
func (p *Proxier) Missing(ctx context.Context) ([]string, error) {
	vips := p.bound.Load()
	if vips == nil {
		return nil, nil // no sync yet
	}
	var missing []string
	for _, h := range hooks {
		m, err := p.missingChain(ctx, h.table, h.target)
		if err != nil {
			return nil, err
		}
		missing = append(missing, m...)
		ok, err := iptables.HasJump(ctx, p.opt.IPTables, h.table, h.chain, h.target)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, fmt.Sprintf("%s table: the jump from %s to %s", h.table, h.chain, h.target))
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

// missingChain says whether one of our chains is gone or empty.
func (p *Proxier) missingChain(ctx context.Context, table, chain string) ([]string, error) {
	rules, err := p.opt.IPTables.ListChain(ctx, table, chain)
	switch {
	case errors.Is(err, iptables.ErrNoChain):
		return []string{fmt.Sprintf("%s table: chain %s", table, chain)}, nil
	case err != nil:
		return nil, err
	case len(rules) == 0:
		return []string{fmt.Sprintf("%s table: the rules of %s", table, chain)}, nil
	}
	return nil, nil
}
