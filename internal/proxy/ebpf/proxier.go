package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// Options configure a Proxier.
type Options struct {
	// PinDir is the bpffs directory of the maps and links;
	// DefaultPinDir when empty.
	PinDir string
	// Cgroup is the cgroup v2 directory the hooks attach to; the root
	// of the cgroup v2 mount when empty.
	Cgroup string
	// NetnsCookie is the network namespace whose sockets are
	// translated; this process's own when 0.
	NetnsCookie uint64
	// Endpoints are the endpoint entries the clusters' limits allow
	// together (config.Config.EndpointEntries): the maps are sized for
	// them (capacity.go); config.DefaultMaxEndpoints when 0.
	Endpoints int
	Log       *slog.Logger
}

// Proxier is the ebpf backend, for both IP families: one set of hooks
// serves both.
type Proxier struct {
	opt Options
	log *slog.Logger

	mu sync.Mutex
	dp *datapath
	// destroyer is nil on a kernel without bpf_sock_destroy.
	destroyer *destroyer
	// spec changes the objects before they load (tests only).
	spec func(*ebpf.CollectionSpec)
	// cookie is the network namespace translated: the client of every
	// affinity entry.
	cookie uint64
	// inNetns runs the socket iterator; tests give their namespace's.
	inNetns func(func() error) error
	// w are the writers of the IPv4 (false) and IPv6 (true) maps.
	w map[bool]*writer
	// applied is what the last syncs programmed, per port, to write only
	// what changed; nil forces the next sync to be full.
	applied map[model.PortKey]appliedPort
	// known says, per cluster the last sync saw, whether its ports were
	// known. A cluster that comes, goes or gets its ports known makes
	// the next sync full: what an earlier run left for it is in the maps
	// and not in applied.
	known map[string]bool
}

type appliedPort struct {
	port *model.ServicePort
	ids  []svcID
}

var (
	_ proxy.Backend = (*Proxier)(nil)
	_ proxy.Sized   = (*Proxier)(nil)
	_ proxy.Prober  = (*Proxier)(nil)
)

// New makes a Proxier. Nothing touches the kernel before the first Sync.
func New(opt Options) *Proxier {
	if opt.PinDir == "" {
		opt.PinDir = DefaultPinDir
	}
	if opt.Endpoints == 0 {
		opt.Endpoints = config.DefaultMaxEndpoints
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxier{opt: opt, log: log}
}

// start loads and attaches the datapath at the first sync. Tests of the
// sync logic set w instead, to fakes.
func (p *Proxier) start() error {
	if p.w != nil {
		return nil
	}
	opt := objectsOptions{PinDir: p.opt.PinDir, Cgroup: p.opt.Cgroup, NetnsCookie: p.opt.NetnsCookie, Endpoints: p.endpoints(), spec: p.spec}
	if opt.Cgroup == "" {
		mnt, err := Cgroup2Mount()
		if err != nil {
			return err
		}
		opt.Cgroup = mnt
	}
	if opt.NetnsCookie == 0 {
		c, err := OwnNetnsCookie()
		if err != nil {
			return err
		}
		opt.NetnsCookie = c
	}
	p.cookie = opt.NetnsCookie
	dp, err := loadDatapath(opt)
	if err != nil {
		return &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	p.dp, p.applied = dp, nil
	if len(dp.migrated) > 0 {
		p.log.Info("ebpf: pinned maps of another layout or capacity are replaced; the programs move to the new ones once they hold the state",
			"maps", slices.Sorted(maps.Keys(dp.migrated)), "not_copied", dp.notCopied)
	}
	if p.destroyer, err = loadDestroyer(dp.objs.KoSock); err != nil {
		p.log.Info("connected UDP sockets of endpoints that leave are not destroyed: the kernel cannot (bpf_sock_destroy, Linux 6.5)", "err", err)
	}
	p.w = map[bool]*writer{
		false: newWriter(maps4{dp.objs.KoSvc4, dp.objs.KoBe4}),
		true:  newWriter(maps6{dp.objs.KoSvc6, dp.objs.KoBe6}),
	}
	return nil
}

// Sync implements proxy.Backend. A full sync reads the maps back (those
// a previous run pinned, at the first) and writes the difference; a
// partial one writes the ports whose ServicePort changed, and touches
// nothing of the others: at 10,000 services a change costs a walk over
// pointers, not a copy of the state.
func (p *Proxier) Sync(ctx context.Context, st *model.State, full bool) (err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.start(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// The copy no longer says what the kernel holds.
			p.applied = nil
		}
	}()
	known := make(map[string]bool, len(st.Clusters))
	for _, c := range st.Clusters {
		known[c.Name] = c.PortsKnown()
	}
	prev := p.applied
	full = full || prev == nil || !maps.Equal(known, p.known)
	if full {
		for _, w := range p.w {
			if err := w.load(); err != nil {
				return fmt.Errorf("reading the maps: %w", err)
			}
		}
		p.applied = make(map[model.PortKey]appliedPort, len(prev))
	}
	// written are the service addresses written in this sync, so that
	// one a port moved to is not deleted with the port it left.
	written := map[svcID]bool{}
	var dropped []appliedPort
	kept := map[uint32]bool{}
	clusters := make(map[string]*model.ClusterState, len(st.Clusters))
	var errs []error
	for _, c := range st.Clusters {
		clusters[c.Name] = c
		owner := ownerOf(c.Name)
		if !c.PortsKnown() {
			// The maps keep what an earlier run wrote for it.
			kept[owner] = true
			if full {
				for k, a := range prev {
					if k.Cluster == c.Name {
						p.applied[k] = a
					}
				}
			}
			continue
		}
		for k, sp := range c.Ports {
			old, had := p.applied[k]
			if had && old.port.Equal(sp) {
				continue
			}
			if had {
				dropped = append(dropped, old)
			}
			a := appliedPort{port: sp}
			eps := endpointsOf(sp)
			h := svcHead{owner: owner, affinity: affinitySeconds(sp.Affinity)}
			for _, addr := range sp.Addrs() {
				id := svcID{addr: addr, port: sp.Port, proto: protoOf(sp.Key.Protocol)}
				a.ids = append(a.ids, id)
				written[id] = true
				if err := p.w[k.IPv6].setService(id, h, eps); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", k, err))
				}
			}
			p.applied[k] = a
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Then what is no longer wanted (flush deletes it after every write,
	// so a port moving from one key to another is never missing).
	if full {
		for _, w := range p.w {
			for id, s := range w.services {
				if !written[id] && !kept[s.owner] {
					w.deleteService(id)
				}
			}
			w.collect()
		}
	} else {
		for k, a := range p.applied {
			c := clusters[k.Cluster]
			if c == nil || (c.PortsKnown() && c.Ports[k] == nil) {
				dropped = append(dropped, a)
				delete(p.applied, k)
			}
		}
		for _, old := range dropped {
			for _, id := range old.ids {
				if !written[id] {
					p.w[id.addr.Is6()].deleteService(id)
				}
			}
		}
	}
	for v6, w := range p.w {
		if err := w.flush(); err != nil {
			return fmt.Errorf("writing the IPv%d maps: %w", map[bool]int{false: 4, true: 6}[v6], err)
		}
	}
	// The hooks take this run's programs once its maps hold the state.
	if p.dp != nil && !p.dp.attached() {
		if err := p.dp.attach(); err != nil {
			return err
		}
	} else if p.dp != nil && full {
		// What a probe found gone (repair.go).
		if err := p.dp.repair(); err != nil {
			return err
		}
	}
	p.known = known
	p.destroyStale()
	p.forgetAffinity()
	return nil
}

// destroyStale destroys the connected UDP sockets of the endpoints that
// left their service in this sync, once no new socket can be sent to
// them. A failure is logged, not retried: the maps are right, and the
// sockets' own traffic will tell them.
func (p *Proxier) destroyStale() {
	var gone []flow
	for _, w := range p.w {
		gone = append(gone, w.takeGone()...)
	}
	if len(gone) == 0 || p.destroyer == nil {
		return
	}
	run := p.inNetns
	if run == nil {
		run = func(f func() error) error { return f() }
	}
	if err := p.destroyer.destroy(gone, run); err != nil {
		p.log.Warn("could not destroy stale connected UDP sockets", "err", err)
	}
}

// affinitySeconds rounds up: a timeout is never shortened.
func affinitySeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min((d+time.Second-1)/time.Second, math.MaxUint32))
}

func protoOf(pr model.Protocol) uint8 {
	n, _ := pr.IPNumber()
	return n
}

func endpointsOf(sp *model.ServicePort) []beKey {
	out := make([]beKey, 0, len(sp.Endpoints))
	for _, e := range sp.Endpoints {
		if e.Addr.Addr().Is6() != sp.Key.IPv6 {
			continue
		}
		out = append(out, beKey{addr: e.Addr.Addr(), port: e.Addr.Port(), proto: protoOf(sp.Key.Protocol)})
	}
	return out
}

// Cleanup implements proxy.Backend: it detaches the hooks and removes the
// maps and every pin.
func (p *Proxier) Cleanup(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.release()
	return removePinned(p.opt.PinDir)
}

func (p *Proxier) release() {
	if p.destroyer != nil {
		p.destroyer.close()
	}
	if p.dp != nil {
		p.dp.close()
	}
	p.dp, p.destroyer, p.w, p.applied = nil, nil, nil, nil
}

// Close lets go of the datapath and leaves it pinned and attached, for
// the next start to take over.
func (p *Proxier) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.release()
}
