// Package ipvs programs the desired state with IPVS: one virtual server per
// ClusterIP:port:protocol with endpoints, the ClusterIPs bound to the dummy
// interface outpost0, and a fixed handful of iptables rules and two ipsets
// around it. A virtual server is ours exactly when its address is on
// outpost0; nothing else in IPVS is ever touched.
//
// A port's VIP is its ClusterIP, or its local_service_cidr mapping. Each
// allowed external IP of a port is one more virtual server, its address
// bound to outpost0 like a VIP: that makes this host answer for the
// external IP, which is what allow_external_ips asks for, and only on this
// host (nothing is announced); its other ports are refused like a VIP's.
//
// Every sync reads IPVS and outpost0 back and applies only the difference,
// so a restarted daemon converges on what an earlier one left without
// tearing down anything that is already right.
package ipvs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// Options configure a Proxier.
type Options struct {
	Kernel   Kernel
	IPTables iptables.Runner // of the same family as IPv6
	IPSet    IPSetRunner
	// IPv6 selects the family this Proxier programs; the other family's
	// services, addresses and rules are left alone.
	IPv6 bool
	// Scheduler is the IPVS scheduler of every virtual server; "rr" when
	// empty.
	Scheduler string
	// RoutedClients are the source ranges (routed_clients) from which
	// packets that are not this host's own reach the VIPs; those of the
	// other family are ignored. New connections to a VIP from anywhere
	// else are dropped before IPVS sees them.
	RoutedClients []netip.Prefix
	// MasqueradeMark, as in the iptables backend, says whether to
	// masquerade: 0 masquerades only connections from this host (which
	// cannot work otherwise, see chainRules), any other value every
	// connection IPVS forwards. The bit itself is not used: -m ipvs
	// recognises IPVS connections without a mark.
	MasqueradeMark uint32
	// GracefulTimeout is how long a removed TCP or SCTP endpoint keeps its
	// open connections (at weight 0) before it is deleted anyway; 5m when
	// zero.
	GracefulTimeout time.Duration
	// Resync, when set, is called when destinations are draining, so that
	// one is deleted soon after its last connection ends even when no
	// other change triggers a sync. Wire it to the sync loop's Trigger.
	Resync func()
	Clock  clock.WithDelayedExecution // the real clock when nil
	Log    *slog.Logger
}

const (
	defaultScheduler       = "rr"
	defaultGracefulTimeout = 5 * time.Minute
	// drainPoll is how often draining destinations are looked at again.
	drainPoll = 15 * time.Second
)

// Proxier is the IPVS backend for one IP family.
type Proxier struct {
	opt Options
	log *slog.Logger

	moduleReady bool
	needFull    bool
	// drift are the sysctls found off their value and not settable from
	// here (sysctls.go), as last checked; status shows them.
	drift atomic.Pointer[[]string]
	// sets is the content of our ipsets as last written, by name; a set
	// that is missing here is rewritten by the next sync.
	sets map[string]setContent
	// zeroed is when each draining destination got weight 0, or was first
	// seen with it after a restart.
	zeroed map[destKey]time.Time
	timer  clock.Timer
	// nodePortsOn: a cluster serves node ports, so the NODEPORTS set
	// exists and the rules refuse node ports without endpoints.
	// rulesNodePorts is what the rules in the kernel were written for,
	// nil when unknown.
	nodePortsOn    bool
	rulesNodePorts *bool
	warnedNoMasq   bool
	// bound are the VIPs the last successful sync left on outpost0, for
	// Missing (canary.go); nil before it.
	bound atomic.Pointer[setContent]
}

// destKey is one destination of one virtual server.
type destKey struct {
	svc  ServiceKey
	dest netip.AddrPort
}

var _ proxy.Backend = (*Proxier)(nil)

// New makes a Proxier. Nothing touches the kernel before the first Sync.
func New(opt Options) *Proxier {
	if opt.Scheduler == "" {
		opt.Scheduler = defaultScheduler
	}
	if opt.GracefulTimeout <= 0 {
		opt.GracefulTimeout = defaultGracefulTimeout
	}
	if opt.Clock == nil {
		opt.Clock = clock.RealClock{}
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxier{opt: opt, log: log, needFull: true, sets: map[string]setContent{}, zeroed: map[destKey]time.Time{}}
}

// sysctls are set by prepare, and checked on every full sync (sysctls.go).
// They are the ones kube-proxy sets in IPVS mode for the same reasons. Despite the
// path, they apply to IPVS of both families.
var sysctls = []struct{ name, value string }{
	// Keep conntrack entries for IPVS connections: without them the
	// MASQUERADE rule (-m ipvs) and the ctstate match of the reject rule
	// never see IPVS traffic, and replies would not be un-NATed.
	{"net/ipv4/vs/conntrack", "1"},
	// 0: a new connection from a source port that an old connection used
	// (now in TIME_WAIT) goes where the old one went. With 1 and
	// conntrack=1, kernels before 5.9 drop its first SYN instead, and
	// the client waits a second for the retransmit. The price: such a
	// connection may land on a draining destination.
	{"net/ipv4/vs/conn_reuse_mode", "0"},
	// Drop the connections of a deleted destination at their next packet,
	// so that clients see a reset instead of a silent black hole until
	// the IPVS entry times out.
	{"net/ipv4/vs/expire_nodest_conn", "1"},
	// With ClientIP affinity, forget the persistence of a client to a
	// destination once its weight is 0, so that affine clients move to
	// the remaining endpoints instead of sticking to a terminating one.
	{"net/ipv4/vs/expire_quiescent_template", "1"},
	// net/ipv4/ip_forward is not needed: traffic from local processes is
	// not forwarded.
}

func (p *Proxier) family(a netip.Addr) bool { return a.Is6() == p.opt.IPv6 }

// bindable says whether an address on outpost0 can be one of our VIPs: a
// link-local address appears when someone sets the link up, and is not.
func (p *Proxier) bindable(a netip.Addr) bool { return p.family(a) && !a.IsLinkLocalUnicast() }

// Sync implements proxy.Backend.
func (p *Proxier) Sync(ctx context.Context, st *model.State, full bool) (err error) {
	defer func() {
		if err != nil {
			// Rewrite the rules and sets next time: we may not know what
			// they hold any more.
			p.needFull = true
		}
	}()
	full = full || p.needFull
	if full {
		clear(p.sets)
		p.rulesNodePorts = nil
	}
	p.nodePortsOn = false
	for _, c := range st.Clusters {
		p.nodePortsOn = p.nodePortsOn || p.servesNodePorts(c)
	}
	if err := p.prepare(ctx, full); err != nil {
		return err
	}
	// The node ports served before: which virtual servers at this host's
	// addresses are ours.
	oldNodes, err := p.nodeMembers(ctx)
	if err != nil {
		return err
	}
	addrs, err := p.opt.Kernel.InterfaceAddrs()
	if err != nil {
		return err
	}
	vss, err := p.opt.Kernel.List()
	if err != nil {
		return err
	}
	pl := p.plan(st, addrs, vss, oldNodes)

	// Before the kernel changes: refuse ports whose virtual server is about
	// to go, and protect VIPs about to be bound, so that the host's own
	// listeners never answer on a ClusterIP.
	if err := p.writeSets(ctx, pl.interimVIPs(), pl.interimPorts()); err != nil {
		return err
	}
	if p.nodePortsOn {
		if err := p.writeNodeSet(ctx, pl.interimNodes()); err != nil {
			return err
		}
	}
	if err := p.writeClientSet(ctx); err != nil {
		return err
	}
	if full || p.rulesNodePorts == nil || *p.rulesNodePorts != p.nodePortsOn {
		// The sets exist now: the rules may name them.
		if err := p.syncRules(ctx); err != nil {
			return err
		}
		on := p.nodePortsOn
		p.rulesNodePorts = &on
	}
	res := p.apply(pl)
	// After: open the ports whose virtual server now exists.
	setErr := p.writeSets(ctx, res.vips, res.ports)
	if p.nodePortsOn {
		setErr = errors.Join(setErr, p.writeNodeSet(ctx, res.nodes))
	} else if oldNodes != nil && len(res.nodes) == 0 {
		// No rule names it any more: node ports are served no longer.
		setErr = errors.Join(setErr, p.dropNodeSet(ctx))
	}
	p.scheduleResync()
	if err := errors.Join(append(res.errs, setErr)...); err != nil {
		return err
	}
	p.needFull = false
	p.bound.Store(&res.vips)
	p.log.Debug("ipvs sync", "ipv6", p.opt.IPv6, "full", full, "services", len(pl.want), "changes", res.changes)
	return nil
}

// prepare loads the module, sets the sysctls, creates outpost0.
func (p *Proxier) prepare(ctx context.Context, full bool) error {
	k := p.opt.Kernel
	if !p.moduleReady {
		if err := k.EnsureModule(ctx); err != nil {
			return err
		}
		p.moduleReady = true
	}
	if full {
		p.checkSysctls()
	}
	return k.EnsureInterface()
}

// syncRules writes our iptables chains and any missing hook.
func (p *Proxier) syncRules(ctx context.Context) error {
	existing, _, err := p.listHooks(ctx, ruleTables)
	if err != nil {
		return err
	}
	return p.opt.IPTables.Restore(ctx, p.rulesScript(existing))
}

// writeSets gives our two ipsets the content wanted, writing only a set
// that differs from what was last written.
func (p *Proxier) writeSets(ctx context.Context, vips, ports setContent) error {
	vs, ps := ourSets(p.opt.IPv6)
	var script []byte
	var wrote []ipset
	for _, s := range []struct {
		set  ipset
		want setContent
	}{{vs, vips}, {ps, ports}} {
		if cur, ok := p.sets[s.set.name]; ok && slices.Equal(cur, s.want) {
			continue
		}
		script = s.set.appendSwap(script, s.want)
		wrote = append(wrote, s.set)
	}
	if len(script) == 0 {
		return nil
	}
	if err := p.opt.IPSet.Restore(ctx, script); err != nil {
		for _, s := range wrote {
			delete(p.sets, s.name) // may be half written
		}
		return err
	}
	p.sets[vs.name], p.sets[ps.name] = vips, ports
	return nil
}

// writeClientSet gives the CLIENTS set this family's routed_clients, once
// per full sync: the filter rules name it.
func (p *Proxier) writeClientSet(ctx context.Context) error {
	s := clientSet(p.opt.IPv6)
	var members setContent
	for _, r := range p.opt.RoutedClients {
		if p.family(r.Addr()) {
			members = append(members, r.String())
		}
	}
	slices.Sort(members)
	if cur, ok := p.sets[s.name]; ok && slices.Equal(cur, members) {
		return nil
	}
	if err := p.opt.IPSet.Restore(ctx, s.appendSwap(nil, members)); err != nil {
		delete(p.sets, s.name)
		return err
	}
	p.sets[s.name] = members
	return nil
}

// servesNodePorts says whether c's node ports are served: the cluster asks
// for it, and connections are masqueraded (config refuses
// serve_node_ports with masquerade = false: the pods' replies would not
// come back through this host).
func (p *Proxier) servesNodePorts(c *model.ClusterState) bool {
	if !c.ServeNodePorts {
		return false
	}
	if p.opt.MasqueradeMark == 0 {
		if !p.warnedNoMasq {
			p.warnedNoMasq = true
			p.log.Warn("serve_node_ports needs masquerading, which is off: node ports are not served", "cluster", c.Name)
		}
		return false
	}
	return true
}

// nodeMembers are the members of the NODEPORTS set: as last written, or
// read from the kernel after a restart or a failure; nil when the set
// does not exist.
func (p *Proxier) nodeMembers(ctx context.Context) (setContent, error) {
	s := nodePortSet(p.opt.IPv6)
	if cur, ok := p.sets[s.name]; ok {
		return cur, nil
	}
	if p.opt.IPSet == nil {
		return nil, nil
	}
	m, err := p.opt.IPSet.Save(ctx, s.name)
	if err != nil || m == nil {
		return nil, err
	}
	p.sets[s.name] = setContent(m)
	return setContent(m), nil
}

// writeNodeSet gives the NODEPORTS set the content wanted, if it differs.
func (p *Proxier) writeNodeSet(ctx context.Context, members setContent) error {
	s := nodePortSet(p.opt.IPv6)
	if cur, ok := p.sets[s.name]; ok && cur != nil && slices.Equal(cur, members) {
		return nil
	}
	if err := p.opt.IPSet.Restore(ctx, s.appendSwap(nil, members)); err != nil {
		delete(p.sets, s.name)
		return err
	}
	p.sets[s.name] = members
	return nil
}

// dropNodeSet destroys the NODEPORTS set once no rule names it.
func (p *Proxier) dropNodeSet(ctx context.Context) error {
	s := nodePortSet(p.opt.IPv6)
	if err := p.opt.IPSet.Restore(ctx, fmt.Appendf(nil, "destroy %s\n", s.name)); err != nil {
		return err
	}
	delete(p.sets, s.name)
	return nil
}

// scheduleResync asks for another sync while destinations drain.
func (p *Proxier) scheduleResync() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if p.opt.Resync == nil || len(p.zeroed) == 0 {
		return
	}
	wait := drainPoll
	now := p.opt.Clock.Now()
	for _, since := range p.zeroed {
		wait = min(wait, since.Add(p.opt.GracefulTimeout).Sub(now))
	}
	p.timer = p.opt.Clock.AfterFunc(max(wait, time.Second), p.opt.Resync)
}

// Cleanup implements proxy.Backend: it deletes the virtual servers on our
// VIPs, our chains and their hooks, our ipsets, and our addresses on
// outpost0, then outpost0 itself unless the other family still has
// addresses there. It never loads ip_vs: without it, IPVS holds nothing.
func (p *Proxier) Cleanup(ctx context.Context) error {
	var errs []error
	k := p.opt.Kernel
	// The addresses go last: they are how we know which virtual servers
	// are ours, and one that could not be deleted must stay ours. So any
	// failure before keeps them.
	ours, others := map[netip.Addr]bool{}, 0
	addrs, err := k.InterfaceAddrs()
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range addrs {
		switch {
		case p.bindable(a):
			ours[a] = true
		case !a.IsLinkLocalUnicast():
			others++
		}
	}
	// Virtual servers at this host's own addresses are ours when the
	// NODEPORTS set says so.
	var nodes setContent
	if p.opt.IPSet != nil {
		m, err := p.opt.IPSet.Save(ctx, nodePortSet(p.opt.IPv6).name)
		if err != nil {
			errs = append(errs, err)
		}
		nodes = m
	}
	if len(ours) > 0 || len(nodes) > 0 {
		vss, err := k.List()
		if err != nil {
			errs = append(errs, err)
		}
		for _, vs := range vss {
			if ours[vs.VIP] || (p.family(vs.VIP) && slices.Contains(nodes, portMember(vs.ServiceKey))) {
				if err := k.DelService(vs.Service); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}

	rulesGone := true
	if p.opt.IPTables != nil {
		if err := p.cleanupRules(ctx); err != nil {
			errs, rulesGone = append(errs, err), false
		}
	}
	// A set still named by a rule cannot be destroyed.
	if p.opt.IPSet != nil && rulesGone {
		if err := p.cleanupSets(ctx); err != nil {
			errs = append(errs, err)
		}
	}

	if len(errs) == 0 {
		if others == 0 {
			errs = append(errs, k.DeleteInterface())
		} else {
			for _, a := range sortedAddrs(ours) {
				errs = append(errs, k.DelAddr(a))
			}
		}
	}
	clear(p.sets)
	clear(p.zeroed)
	p.bound.Store(nil)
	p.needFull = true
	return errors.Join(errs...)
}

func (p *Proxier) cleanupRules(ctx context.Context) error {
	existing, chains, err := p.listHooks(ctx, ruleTables)
	if err != nil {
		return err
	}
	if script := cleanupScript(existing, chains); len(script) > 0 {
		return p.opt.IPTables.Restore(ctx, script)
	}
	return nil
}

func (p *Proxier) cleanupSets(ctx context.Context) error {
	names, err := p.opt.IPSet.List(ctx)
	if err != nil {
		return err
	}
	var script []byte
	for _, n := range names {
		if isOurSet(n, p.opt.IPv6) {
			script = fmt.Appendf(script, "destroy %s\n", n)
		}
	}
	if len(script) == 0 {
		return nil
	}
	return p.opt.IPSet.Restore(ctx, script)
}
