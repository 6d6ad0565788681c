package nftables

import (
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// baseChain is a chain of ours attached to a hook. The priorities put
// ours just before the standard ones of the same hook (docs/datapaths.md,
// "Hook priorities"): the nat chains of a hook are asked in priority order
// until one translates a connection, so our DNAT of the service addresses
// comes before Docker's (iptables-nft, dstnat) and firewalld's
// (dstnat + 10) nat chains, which only translate this host's own
// addresses; our refusals come before their filter chains (priority 0,
// +10), whose drop policies would otherwise turn a fast refusal into a
// time-out. We accept nothing and drop nothing but our own refusals, so
// their verdicts on every other packet stand.
//
// The priorities are numbers: nft 1.0.6 reads "dstnat-5" as one word and
// refuses it, and prints -105 back as it pleases ("srcnat - 5").
type baseChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
}

var baseChains = []baseChain{
	{chainNatOutput, knftables.NATType, knftables.OutputHook, "-105"},
	{chainNatPrerouting, knftables.NATType, knftables.PreroutingHook, "-105"},
	{chainNatPostrt, knftables.NATType, knftables.PostroutingHook, "95"},
	{chainFilterOutput, knftables.FilterType, knftables.OutputHook, "-5"},
	{chainFilterForward, knftables.FilterType, knftables.ForwardHook, "-5"},
	{chainFilterInput, knftables.FilterType, knftables.InputHook, "-5"},
}

// regularChains are the fixed chains that no hook calls directly.
var regularChains = []string{chainServices, chainRouted, chainNodePorts, chainRejectCheck, chainReject, chainMasquerading, chainCanary}

// topRule is a rule of a fixed chain, with its comment.
type topRule struct{ rule, text string }

// writeTop renders the fixed chains and writes those that changed, or all
// of them in a full sync, base chains with their hooks.
func (p *Proxier) writeTop(s *syncPass, st *model.State, shapes map[string]clusterShape) {
	f := p.fam
	top := map[string][]topRule{}
	add := func(chain, rule, text string) { top[chain] = append(top[chain], topRule{rule, text}) }

	add(chainNatOutput, "jump "+chainServices, "kube-outpost: service portals for local processes")
	add(chainNatPrerouting, "jump "+chainRouted, "kube-outpost: service portals for routed traffic")
	add(chainNatPostrt, "jump "+chainMasquerading, "kube-outpost: masquerade proxied traffic")
	add(chainFilterOutput, "jump "+chainRejectCheck, "kube-outpost: refuse services without endpoints")
	if m := p.opt.MasqueradeMark; m != 0 {
		add(chainMasquerading, fmt.Sprintf("meta mark & %#x == 0 return", m), "")
		// Clear the bit, so that a packet passing this host twice is
		// not masqueraded again on the second pass.
		add(chainMasquerading, fmt.Sprintf("meta mark set meta mark ^ %#x", m), "")
		add(chainMasquerading, "masquerade fully-random", "kube-outpost: masquerade proxied traffic")
	}
	// Routed packets reach the services only from routed_clients; goto,
	// so that what services does not take leaves after the node ports.
	for _, cidr := range p.opt.RoutedClients {
		if cidr.Addr().Is6() != p.opt.IPv6 {
			continue
		}
		add(chainRouted, fmt.Sprintf("%s saddr %s goto %s", f.ip, cidr, chainServices), "routed_clients")
		add(chainFilterForward, fmt.Sprintf("%s saddr %s jump %s", f.ip, cidr, chainRejectCheck), "routed_clients")
	}
	// Node ports answer any client that reaches this host.
	add(chainRouted, "goto "+chainNodePorts, "")
	nodePorts := false
	for _, c := range st.Clusters {
		has := func(kind, name string) bool { return shapes[c.Name].known || p.objects[kind+"/"+name] }
		for _, r := range p.clusterRanges(c) {
			if has("map", dispatchMap(c.Name)) {
				add(chainServices, fmt.Sprintf("%s daddr %s %s daddr . meta l4proto . th dport vmap @%s", f.ip, r.prefix, f.ip, dispatchMap(c.Name)), r.text)
			}
			if has("set", rejectSet(c.Name)) {
				add(chainRejectCheck, fmt.Sprintf("%s daddr %s %s daddr . meta l4proto . th dport @%s goto %s", f.ip, r.prefix, f.ip, rejectSet(c.Name), chainReject), r.text)
			}
		}
		if !shapes[c.Name].nodePorts {
			continue
		}
		nodePorts = true
		text := "cluster " + c.Name + " node ports"
		if has("map", nodePortMap(c.Name)) {
			add(chainNodePorts, fmt.Sprintf("%s meta l4proto . th dport vmap @%s", f.localNotLoopback(), nodePortMap(c.Name)), text)
		}
		if has("set", nodeRejectSet(c.Name)) {
			// Only new connections: a reply to this host's own
			// connection from a local port that is a node port passes.
			add(chainRejectCheck, fmt.Sprintf("%s ct state new meta l4proto . th dport @%s goto %s", f.localNotLoopback(), nodeRejectSet(c.Name), chainReject), text)
		}
	}
	add(chainServices, "goto "+chainNodePorts, "")
	if nodePorts {
		// Packets to this host's own addresses: node ports without
		// endpoints.
		add(chainFilterInput, "jump "+chainRejectCheck, "kube-outpost: refuse node ports without endpoints")
	}
	add(chainReject, "meta l4proto tcp reject with tcp reset", "")
	add(chainReject, "reject", "")
	add(chainCanary, "return", "kube-outpost canary: gone means this table was flushed")

	s.top = map[string]string{}
	for _, bc := range baseChains {
		p.writeFixed(s, &knftables.Chain{Name: bc.name, Type: &bc.typ, Hook: &bc.hook, Priority: &bc.priority}, top[bc.name])
	}
	for _, name := range regularChains {
		p.writeFixed(s, &knftables.Chain{Name: name}, top[name])
	}
}

func (p *Proxier) writeFixed(s *syncPass, ch *knftables.Chain, rs []topRule) {
	var text strings.Builder
	var out []*knftables.Rule
	for _, r := range rs {
		fmt.Fprintf(&text, "%s\x00%s\n", r.rule, r.text)
		rule := &knftables.Rule{Rule: r.rule}
		if r.text != "" {
			rule.Comment = comment(r.text)
		}
		out = append(out, rule)
	}
	s.top[ch.Name] = text.String()
	if s.full || p.top[ch.Name] != text.String() {
		s.plan.chain(ch, out, p.objects["chain/"+ch.Name])
	}
}

// clusterRange is a range a cluster's service addresses are in: its
// ranges, and the allowed external IP ranges.
type clusterRange struct {
	prefix netip.Prefix
	text   string
}

func (p *Proxier) clusterRanges(c *model.ClusterState) []clusterRange {
	var out []clusterRange
	for _, r := range c.Ranges() {
		if r.Addr().Is6() == p.opt.IPv6 {
			out = append(out, clusterRange{r, "cluster " + c.Name})
		}
	}
	for _, r := range c.AllowExternalIPs {
		if r.Addr().Is6() == p.opt.IPv6 {
			out = append(out, clusterRange{r, "cluster " + c.Name + " external IPs"})
		}
	}
	return out
}
