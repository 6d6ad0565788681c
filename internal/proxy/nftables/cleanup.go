package nftables

import (
	"context"
	"fmt"

	"sigs.k8s.io/knftables"
)

// Cleanup deletes this family's table of ours, with everything in it.
// Nothing of ours is outside it, so nothing else changes.
func (p *Proxier) Cleanup(ctx context.Context) error {
	if err := deleteTable(ctx, p.opt.NFT); err != nil {
		return err
	}
	p.applied, p.clusters, p.objects, p.top, p.needFull = nil, nil, nil, nil, true
	p.stale.Reset()
	p.synced.Store(false)
	p.counterNames.Store(nil)
	return nil
}

func deleteTable(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	err := nft.Run(ctx, tx)
	if knftables.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting table %s: %w", TableName, err)
	}
	return nil
}

// Missing implements proxy.Prober: whether the canary chain, with its one
// rule, is still there. `nft flush ruleset` or a deleted table takes the
// chain, `nft flush table` its rule; either makes the next sync full.
// Reading one chain of a few bytes is cheap enough for every 2 s.
func (p *Proxier) Missing(ctx context.Context) ([]string, error) {
	if !p.synced.Load() {
		return nil, nil
	}
	rs, err := p.opt.NFT.ListRules(ctx, chainCanary)
	var missing string
	switch {
	case knftables.IsNotFound(err):
		missing = fmt.Sprintf("table %s %s or its chain %s", p.fam.nft, TableName, chainCanary)
	case err != nil:
		return nil, err
	case len(rs) == 0:
		missing = fmt.Sprintf("table %s %s: the rule of chain %s", p.fam.nft, TableName, chainCanary)
	default:
		return nil, nil
	}
	p.stale.Flushed()
	return []string{missing}, nil
}
