package daemon

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// probeInterval is how often the backends are asked whether something of
// theirs was removed behind our back. A few seconds: a firewall reload is
// repaired before most clients give up, and each probe reads a few small
// chains per table (a canary or our chains, and the built-in chains that
// jump to them) and one interface's addresses, not whole tables.
const probeInterval = 2 * time.Second

// probe asks every backend that can tell (proxy.Prober) what of its
// objects is gone, and has a full sync rewrite them: one log line and one
// count per repair, not per probe that still sees the damage.
func (d *Daemon) probe(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.probeOnce(ctx)
	}
}

// probeOnce is one probe of every backend.
func (d *Daemon) probeOnce(ctx context.Context) {
	var missing []string
	for _, b := range d.backendList() {
		p, ok := b.(proxy.Prober)
		if !ok {
			continue
		}
		m, err := p.Missing(ctx)
		if err != nil {
			// Not a verdict: the next probe asks again, and the
			// periodic full sync repairs whatever it is anyway.
			d.log.Debug("could not probe for removed rules", "err", err)
			continue
		}
		missing = append(missing, m...)
	}
	if len(missing) == 0 {
		return
	}
	if d.loop.askRepair() {
		d.metrics.Repair()
		d.log.Warn("rules of ours were removed behind our back (a firewall reload?); a full sync puts them back",
			"missing", strings.Join(missing, "; "))
	}
}

// connectionCounts adds up what every backend that counts connections
// (proxy.ConnectionCounter) holds, for service_metrics.
func (d *Daemon) connectionCounts(ctx context.Context) (map[model.PortKey]uint64, error) {
	out := map[model.PortKey]uint64{}
	var errs []error
	for _, b := range d.backendList() {
		c, ok := b.(proxy.ConnectionCounter)
		if !ok {
			continue
		}
		counts, err := c.ConnectionCounts(ctx)
		errs = append(errs, err)
		for k, n := range counts {
			out[k] += n
		}
	}
	return out, errors.Join(errs...)
}
