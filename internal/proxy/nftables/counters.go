package nftables

import (
	"context"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

var _ proxy.ConnectionCounter = (*Proxier)(nil)

// ConnectionCounts implements proxy.ConnectionCounter: the named counter
// of each port the last sync programmed, read in one listing. It runs
// beside Sync, so it reads only the kernel and what apply published.
func (p *Proxier) ConnectionCounts(ctx context.Context) (map[model.PortKey]uint64, error) {
	names := p.counterNames.Load()
	if names == nil {
		return nil, nil
	}
	cs, err := p.opt.NFT.ListCounters(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[model.PortKey]uint64, len(*names))
	for _, c := range cs {
		if c == nil || c.Packets == nil {
			continue
		}
		if k, ok := (*names)[c.Name]; ok {
			out[k] = *c.Packets
		}
	}
	return out, nil
}

// publishCounters records, after a sync, which counter is which port's.
// newKeys says whether next holds other ports than the last sync's.
func (p *Proxier) publishCounters(next map[model.PortKey]*rendered, newKeys bool) {
	if old := p.counterNames.Load(); old != nil && len(*old) == len(next) && !newKeys {
		// The same ports as before: naming 10,000 counters again
		// would be a fifth of a one-endpoint change's time.
		return
	}
	names := make(map[string]model.PortKey, len(next))
	for k := range next {
		names[counterName(k)] = k
	}
	p.counterNames.Store(&names)
}
