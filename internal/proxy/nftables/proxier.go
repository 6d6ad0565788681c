// Package nftables programs the desired state into one nftables table per
// IP family, `ip kube-outpost` and `ip6 kube-outpost`, through knftables
// transactions. It owns those tables and touches nothing outside them.
package nftables

import (
	"log/slog"
	"net/netip"
	"sync/atomic"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// Options configure a Proxier.
type Options struct {
	// NFT is bound to this family's table of ours (TableName).
	NFT knftables.Interface
	// Rules, when set, writes the changes that only give existing
	// service chains new rules, without nft (fastpath.go).
	Rules RuleWriter
	IPv6  bool
	// MasqueradeMark is the fwmark bit of connections to masquerade; 0
	// turns masquerading off.
	MasqueradeMark uint32
	// Conntrack, when set, forgets UDP flows to endpoints that left.
	Conntrack iptables.Conntrack
	// RoutedClients are the source ranges whose routed packets reach
	// the services; those of the other family are ignored.
	RoutedClients []netip.Prefix
	Log           *slog.Logger
}

// Proxier is the nftables backend for one IP family.
type Proxier struct {
	opt Options
	log *slog.Logger
	fam family

	// What the last successful sync programmed, to write only the
	// difference next time.
	applied map[model.PortKey]*rendered
	// The clusters the last successful sync saw, with what decides their
	// maps and sets: a change to it makes the next sync full.
	clusters map[string]clusterShape
	// objects are ours as they stand in the kernel, "kind/name" (chain,
	// map, set, counter), from the last full sync's listing and every
	// transaction since.
	objects map[string]bool
	// top are the rules of the fixed chains as last written.
	top       map[string]string
	needFull  bool
	stale     *iptables.StaleUDP[*rendered]
	nodePorts *proxy.NodePortGate
	// synced: a sync wrote the table, so the canary is there to probe.
	synced atomic.Bool
	// counterNames are the ports' counters, name to port, as the last
	// sync left them (counters.go).
	counterNames atomic.Pointer[map[string]model.PortKey]
	// fastBatches counts the syncs the fast path wrote.
	fastBatches atomic.Int64
	// fullByNFT: a full sync's netlink batch failed once; full syncs
	// go through nft alone from then on.
	fullByNFT bool
}

// clusterShape is what of a cluster decides which of its objects exist.
type clusterShape struct {
	known     bool // its ports are programmed: synced, or a last known state
	nodePorts bool // serves node ports
}

var _ proxy.Backend = (*Proxier)(nil)

// New makes a Proxier. Nothing touches the kernel before the first Sync.
func New(opt Options) *Proxier {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stale := &iptables.StaleUDP[*rendered]{Conntrack: opt.Conntrack, Log: log,
		View: func(r *rendered) (*model.ServicePort, bool) { return r.port, r.servesNodePort() }}
	return &Proxier{opt: opt, log: log, fam: familyOf(opt.IPv6), needFull: true, stale: stale,
		nodePorts: &proxy.NodePortGate{MasqueradeMark: opt.MasqueradeMark, Log: log}}
}

func (r *rendered) servesNodePort() bool {
	set := nodePortMap(r.port.Key.Cluster)
	for _, e := range r.elems {
		if e.set == set {
			return true
		}
	}
	return false
}
