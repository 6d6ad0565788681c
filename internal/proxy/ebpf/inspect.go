package ebpf

import (
	"context"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

var (
	_ proxy.Inspector   = (*Proxier)(nil)
	_ proxy.MissCounter = (*Proxier)(nil)
)

// Datapath lists the hooks with the program attached to each and the
// fill of the maps that a sync can fill up. ko_sock (socket storage) has
// no keys to walk and grows with the sockets, not with the services; the
// one-entry arrays are never full.
func (p *Proxier) Datapath(ctx context.Context) (proxy.Datapath, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out proxy.Datapath
	if p.dp == nil {
		return out, nil
	}
	for i, l := range p.dp.links {
		info, err := l.Info()
		if err != nil {
			return out, fmt.Errorf("hook %s: %w", hooks[i].name, err)
		}
		out.Programs = append(out.Programs, proxy.AttachedProgram{Hook: hooks[i].name, ID: uint32(info.Program), Target: p.dp.opt.Cgroup})
	}
	o := &p.dp.objs
	for _, m := range []struct {
		name string
		m    *ebpf.Map
	}{{"ko_svc4", o.KoSvc4}, {"ko_be4", o.KoBe4}, {"ko_svc6", o.KoSvc6}, {"ko_be6", o.KoBe6}, {"ko_affinity", o.KoAffinity}} {
		n, err := countKeys(ctx, m.m)
		if err != nil {
			return out, fmt.Errorf("map %s: %w", m.name, err)
		}
		out.Maps = append(out.Maps, proxy.MapFill{Name: m.name, Entries: n, Capacity: int(m.m.MaxEntries())})
	}
	return out, nil
}

// countKeys walks m's keys. An entry deleted under the walk (an LRU
// eviction) makes the kernel start over from the first key, so the walk
// stops at the map's capacity rather than going round for ever.
func countKeys(ctx context.Context, m *ebpf.Map) (int, error) {
	var key []byte
	n := 0
	for max := int(m.MaxEntries()); n < max; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return n, ctx.Err()
		}
		next, err := m.NextKeyBytes(keyOrNil(key))
		if err != nil {
			return n, err
		}
		if next == nil {
			break
		}
		key = next
	}
	return n, nil
}

// keyOrNil: a nil interface asks for the first key, a nil []byte would
// not.
func keyOrNil(k []byte) any {
	if k == nil {
		return nil
	}
	return k
}

// NoBackend sums ko_nobackend over the CPUs: the hooks' refusals of
// ports without endpoints since the map was made. 0 before the first
// sync has loaded it.
func (p *Proxier) NoBackend(context.Context) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dp == nil {
		return 0, nil
	}
	var perCPU []uint64
	if err := p.dp.objs.KoNobackend.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("ko_nobackend: %w", err)
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum, nil
}
