package iptables

import (
	"bufio"
	"bytes"
	"context"
	"slices"
	"strings"
)

// Cleanup removes every chain of iptables mode and every rule that jumps to
// one, in each table, whatever version wrote them (ownChain).
func (p *Proxier) Cleanup(ctx context.Context) error {
	return p.cleanup(ctx, ownChain)
}

// ModeInUse says whether iptables mode's rules are programmed.
func ModeInUse(ctx context.Context, r Runner) bool {
	data, err := r.Save(ctx, "nat")
	return err == nil && slices.Contains(ourChains(data), chainServices)
}

func (p *Proxier) cleanup(ctx context.Context, ours func(chain string) bool) error {
	tx := newTransaction()
	for _, table := range []string{"nat", "filter", "mangle", "raw"} {
		data, err := p.opt.Runner.Save(ctx, table)
		if err != nil {
			// A table that does not exist has nothing of ours.
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "-A ") {
				continue
			}
			f := strings.Fields(line)
			chain := f[1]
			if strings.HasPrefix(chain, chainPrefix) {
				continue
			}
			if i := indexOf(f, "-j"); i > 0 && i+1 < len(f) && ours(f[i+1]) {
				tx.del(table, chain, strings.Join(f[2:], " "))
			}
		}
		for _, ch := range ourChains(data) {
			if ours(ch) {
				tx.remove(table, ch)
			}
		}
	}
	if !tx.empty() {
		if err := p.opt.Runner.Restore(ctx, tx.script()); err != nil {
			return err
		}
	}
	p.stale.Reset()
	p.applied, p.clusters, p.chains, p.needFull = nil, nil, nil, true
	p.canaries.Store(false)
	p.hooked.Store(nil)
	return nil
}
