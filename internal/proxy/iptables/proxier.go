// Package iptables programs the desired state with iptables-restore
// transactions. It owns the chains named OUTPOST-* and one jump rule into
// them from each built-in chain it hooks, and touches nothing else.
package iptables

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// Options configure a Proxier.
type Options struct {
	Runner Runner
	IPv6   bool
	// MasqueradeMark is the fwmark bit of connections to masquerade; 0
	// turns masquerading off.
	MasqueradeMark uint32
	// Conntrack, when set, forgets UDP flows to endpoints that left.
	Conntrack Conntrack
	// RoutedClients are the source ranges whose routed packets reach
	// the services (routed_clients); those of the other family are
	// ignored. Routed packets from elsewhere reach only node ports.
	RoutedClients []netip.Prefix
	Log           *slog.Logger
}

// Proxier is the iptables backend for one IP family.
type Proxier struct {
	opt Options
	log *slog.Logger

	// What the last successful sync programmed, to write only the
	// difference next time.
	applied map[model.PortKey]*programmed
	// The clusters the last successful sync saw, with what decides their
	// chains: a change to it makes the next sync full.
	clusters map[string]clusterShape
	// Our chains as they stand in the kernel, per table.
	chains map[string]map[string]bool
	// Rules outside our chains that jump to one, per table, as
	// "chain<TAB>rule" by target, from the last full sync's listing.
	hooks map[string]map[string][]string
	// The rules of the top chains as last written, "table/chain" -> text.
	top      map[string]string
	needFull bool
	// sctp is nil until probed: whether this kernel matches SCTP ports.
	sctp *bool
	// stale forgets the UDP flows of endpoints that went.
	stale *StaleUDP[*programmed]
	// warnedNoMasq: serve_node_ports without a masquerade mark was
	// logged once.
	warnedNoMasq bool
	// canaries: a sync wrote the canary chains (canary.go).
	canaries atomic.Bool
	// hooked is the jumps into our chains that the last full sync made
	// sure of, for Missing (canary.go); nil before it and after Cleanup.
	hooked atomic.Pointer[[]hookRef]
}

// hookRef is one jump from a built-in chain into one of ours.
type hookRef struct{ table, chain, target string }

// clusterShape is what of a cluster decides which of its chains exist.
type clusterShape struct {
	known     bool // its ports are programmed: synced, or a last known state
	nodePorts bool // serves node ports
}

// programmed is what was written for one service port.
type programmed struct {
	port     *model.ServicePort
	dispatch string // OUTPOST-C rule, "" when the port has no endpoints
	reject   string // OUTPOST-R rule, "" when it has endpoints
	// extDispatch and extReject are the OUTPOST-X and OUTPOST-XR rules
	// of its external IPs, likewise.
	extDispatch, extReject []string
	// nodeDispatch and nodeReject are its OUTPOST-N and OUTPOST-NR
	// rules, "" when its node port is not served.
	nodeDispatch, nodeReject string
}

// dispatchOrEmpty and the five below are a port's rules as programmed;
// a nil *programmed has none.
func (pr *programmed) dispatchOrEmpty() string {
	if pr == nil {
		return ""
	}
	return pr.dispatch
}

func (pr *programmed) rejectOrEmpty() string {
	if pr == nil {
		return ""
	}
	return pr.reject
}

func (pr *programmed) extDispatchOrNil() []string {
	if pr == nil {
		return nil
	}
	return pr.extDispatch
}

func (pr *programmed) extRejectOrNil() []string {
	if pr == nil {
		return nil
	}
	return pr.extReject
}

func (pr *programmed) nodeDispatchOrEmpty() string {
	if pr == nil {
		return ""
	}
	return pr.nodeDispatch
}

func (pr *programmed) nodeRejectOrEmpty() string {
	if pr == nil {
		return ""
	}
	return pr.nodeReject
}

var _ proxy.Backend = (*Proxier)(nil)

// jumps are the rules in built-in chains that lead into ours.
var jumps = []struct {
	table, chain, target, comment string
	// nodePorts: only while a cluster serves node ports.
	nodePorts bool
}{
	{"nat", "OUTPUT", chainServices, "kube-outpost: service portals for local processes", false},
	{"nat", "PREROUTING", chainRouted, "kube-outpost: service portals for routed traffic", false},
	{"nat", "POSTROUTING", chainPostrt, "kube-outpost: masquerade proxied traffic", false},
	{"filter", "OUTPUT", chainFilter, "kube-outpost: reject services without endpoints", false},
	{"filter", "FORWARD", chainForward, "kube-outpost: reject services without endpoints", false},
	// Packets to this host's own addresses: node ports without endpoints.
	{"filter", "INPUT", chainFilter, "kube-outpost: reject node ports without endpoints", true},
}

// New makes a Proxier. Nothing touches the kernel before the first Sync.
func New(opt Options) *Proxier {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stale := &StaleUDP[*programmed]{Conntrack: opt.Conntrack, Log: log,
		View: func(pr *programmed) (*model.ServicePort, bool) { return pr.port, pr.nodeDispatch != "" }}
	return &Proxier{opt: opt, log: log, needFull: true, stale: stale}
}

func (p *Proxier) family(ipv6 bool) bool { return ipv6 == p.opt.IPv6 }

// servesNodePorts says whether this Proxier serves c's node ports: the
// cluster asks for it, and connections can be masqueraded (config refuses
// serve_node_ports with masquerade = false; without the mark, the pods'
// replies would not come back, so nothing is better than that).
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

// sctpSupported probes once whether the kernel can match SCTP ports; without
// it one SCTP service would make every restore fail.
func (p *Proxier) sctpSupported(ctx context.Context) bool {
	if p.sctp != nil {
		return *p.sctp
	}
	const probe = chainPrefix + "PROBE-SCTP"
	script := fmt.Sprintf("*nat\n:%s - [0:0]\n-A %s -p sctp -m sctp --dport 1 -j RETURN\n-F %s\n-X %s\nCOMMIT\n", probe, probe, probe, probe)
	err := p.opt.Runner.Restore(ctx, []byte(script))
	ok := err == nil
	var re *RestoreError
	if !ok && !(errors.As(err, &re) && (strings.Contains(re.Output, "load match") || strings.Contains(re.Output, "No such file or directory"))) {
		// Not a verdict on the kernel (a lock timeout, a cancelled
		// context): leave SCTP out of this sync and ask again next time.
		p.log.Warn("could not probe SCTP support", "err", err)
		return false
	}
	if !ok {
		p.log.Warn("this kernel cannot match SCTP ports; SCTP services are not programmed")
	}
	p.sctp = &ok
	return ok
}

// listChains reads which of our chains exist, per table.
func (p *Proxier) listChains(ctx context.Context) (map[string]map[string]bool, map[string]map[string][]string, error) {
	out := map[string]map[string]bool{}
	hooks := map[string]map[string][]string{}
	for _, table := range []string{"nat", "filter"} {
		data, err := p.opt.Runner.Save(ctx, table)
		if err != nil {
			return nil, nil, err
		}
		out[table] = map[string]bool{}
		for _, ch := range ourChains(data) {
			out[table][ch] = true
		}
		hooks[table] = map[string][]string{}
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "-A" || strings.HasPrefix(f[1], chainPrefix) {
				continue
			}
			if i := indexOf(f, "-j"); i > 0 && i+1 < len(f) && ownChain(f[i+1]) {
				hooks[table][f[i+1]] = append(hooks[table][f[i+1]], f[1]+"\t"+strings.Join(f[2:], " "))
			}
		}
	}
	return out, hooks, nil
}

// ourChains returns this mode's chains declared in iptables-save output.
func ourChains(save []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, ":"+chainPrefix) {
			if ch := strings.Fields(line[1:])[0]; ownChain(ch) {
				out = append(out, ch)
			}
		}
	}
	return out
}

// ownChain says whether a chain is this mode's: every OUTPOST-* chain,
// those of earlier versions too, except those another mode reserved
// (ReserveChains) and cleans up itself, in the order its objects must go.
func ownChain(ch string) bool {
	if !strings.HasPrefix(ch, chainPrefix) {
		return false
	}
	reservedMu.RLock()
	defer reservedMu.RUnlock()
	return !slices.ContainsFunc(reserved, func(p string) bool { return strings.HasPrefix(ch, p) })
}

var (
	reservedMu sync.RWMutex
	reserved   []string
)

// ReserveChains tells this mode that chains named prefix* belong to another
// mode that also writes iptables rules (ipvs mode's OUTPOST-IPVS-*): its
// syncs and its cleanup leave them alone.
func ReserveChains(prefix string) {
	reservedMu.Lock()
	defer reservedMu.Unlock()
	reserved = append(reserved, prefix)
}

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}
