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

// After a repair, probes come every probeFastInterval for probeFastFor: a
// firewall reload flushes several times over (firewalld 1.3 does), and a
// repair that lands between two flushes is undone by the next one; at the
// slow pace the host would stay dark for up to probeInterval after each.
const (
	probeFastInterval = 250 * time.Millisecond
	probeFastFor      = 10 * time.Second
)

// probe asks every backend that can tell (proxy.Prober) what of its
// objects is gone, and has a full sync rewrite them: one log line and one
// count per repair, not per probe that still sees the damage.
func (d *Daemon) probe(ctx context.Context) {
	var fastUntil time.Time
	for {
		wait := probeInterval
		if time.Now().Before(fastUntil) {
			wait = probeFastInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if d.probeOnce(ctx) {
			fastUntil = time.Now().Add(probeFastFor)
		}
	}
}

// probeOnce is one probe of every backend; true when it found something
// gone.
func (d *Daemon) probeOnce(ctx context.Context) bool {
	// A sync that runs while the kernel is read may be writing what the
	// probe finds missing, a repair's own sync included: that would count
	// one flush twice and sync it twice. Such a probe says nothing; the
	// next one, soon after, does.
	edges := d.loop.edges.Load()
	if edges%2 == 1 {
		return false
	}
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
	if len(missing) == 0 || d.loop.edges.Load() != edges {
		return false
	}
	if d.loop.askRepair() {
		d.metrics.Repair()
		d.log.Warn("rules of ours were removed behind our back (a firewall reload?); a full sync puts them back",
			"missing", strings.Join(missing, "; "))
	}
	return true
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

// noBackend adds up what every backend that counts refusals in the
// kernel (proxy.MissCounter) holds; ok is false when none does.
func (d *Daemon) noBackend(ctx context.Context) (n uint64, ok bool, err error) {
	var errs []error
	for _, b := range d.backendList() {
		c, is := b.(proxy.MissCounter)
		if !is {
			continue
		}
		m, err := c.NoBackend(ctx)
		n, ok, errs = n+m, true, append(errs, err)
	}
	return n, ok, errors.Join(errs...)
}
