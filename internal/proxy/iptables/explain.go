package iptables

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// PortView is what iptables holds for one ClusterIP:port/protocol, read
// back from iptables-save for `kube-outpost explain`. It is found by what
// the rules match, not by the chain names the model would give, so that
// rules someone else changed, or an earlier run left, show as they are.
type PortView struct {
	// Path are the nat rules a packet passes on its way to Dispatch: the
	// hooks into OUTPOST-SERVICES and OUTPOST-PREROUTING, the
	// OUTPOST-PREROUTING rules that let routed_clients on to
	// OUTPOST-SERVICES, and the OUTPOST-SERVICES rules whose service
	// range holds the ClusterIP.
	Path []Rule
	// Dispatch are the rules of cluster chains that match the
	// ClusterIP:port; one when all is well.
	Dispatch []Rule
	// Chain is the chain the first dispatch rule jumps to, "" without one.
	Chain string
	// Rules are Chain's rules, in order.
	Rules []Rule
	// Endpoints are Chain's DNAT targets, each with the share of new
	// connections the statistic ladder sends it, in rule order.
	Endpoints []EndpointShare
	// NotDNATed is the share of new connections that leave Chain without
	// a DNAT: 0 when its last DNAT rule has no probability, as ours.
	NotDNATed float64
	// AffinitySeconds is the --seconds of Chain's "recent --update" rules
	// (ClientIP affinity), 0 without such rules.
	AffinitySeconds int
	// RejectPath are the filter rules on the way to Reject: the hooks into
	// OUTPOST-FILTER and OUTPOST-FORWARD, the OUTPOST-FORWARD rules of
	// routed_clients, and OUTPOST-FILTER's rules for the service range.
	RejectPath []Rule
	// Reject are the filter rules of reject chains that refuse the
	// ClusterIP:port; one for a port without endpoints, else none.
	Reject []Rule
}

// Rule is one rule as iptables-save prints it.
type Rule struct {
	Table, Chain string
	Spec         string // without "-A CHAIN"
}

func (r Rule) String() string { return "-A " + r.Chain + " " + r.Spec }

// EndpointShare is one DNAT target of a service chain.
type EndpointShare struct {
	Addr netip.AddrPort `json:"addr"`
	// Probability is the share of new connections (without affinity)
	// that reach this endpoint.
	Probability float64 `json:"probability"`
}

// ReadPort reads what iptables does with packets to vip over proto, from
// iptables-save of the nat and filter tables. It only reads. The two
// tables are read one after the other, so a sync in between can make them
// disagree for a moment.
func ReadPort(ctx context.Context, r Runner, vip netip.AddrPort, proto model.Protocol) (*PortView, error) {
	nat, err := readTable(ctx, r, "nat")
	if err != nil {
		return nil, err
	}
	filter, err := readTable(ctx, r, "filter")
	if err != nil {
		return nil, err
	}
	m := portMatcher{vip: vip, proto: strings.ToLower(string(proto))}
	v := &PortView{}
	v.Path = nat.path(m.vip.Addr(), chainServices, chainRouted)
	v.RejectPath = filter.path(m.vip.Addr(), chainFilter, chainForward)
	// External IPs are dispatched from their own chains (rules.go).
	for _, r := range append(nat.under(clusterPrefix), nat.under(extPrefix)...) {
		if m.matches(r.toks) {
			v.Dispatch = append(v.Dispatch, r.Rule)
		}
	}
	for _, r := range append(filter.under(rejectPrefix), filter.under(extRejPrefix)...) {
		if m.matches(r.toks) && target(r.toks) == "REJECT" {
			v.Reject = append(v.Reject, r.Rule)
		}
	}
	if len(v.Dispatch) > 0 {
		f, err := splitRule(v.Dispatch[0].Spec)
		if err != nil {
			return nil, err
		}
		v.Chain = target(f)
		v.ladder(nat.chains[v.Chain])
	}
	return v, nil
}

// ladder reads the DNAT probability ladder of a service chain: each rule
// takes its probability of what reaches it, the last one the rest.
func (v *PortView) ladder(rules []savedRule) {
	remain := 1.0
	byAddr := map[netip.AddrPort]int{}
	for _, r := range rules {
		v.Rules = append(v.Rules, r.Rule)
		t := target(r.toks)
		if t == "MARK" || t == "" {
			continue // goes on to the next rule
		}
		if slices.Contains(r.toks, "--update") || slices.Contains(r.toks, "--rcheck") {
			// Affinity: matches only clients seen before, whose share is
			// theirs; new connections go down the ladder.
			if s, err := strconv.Atoi(value(r.toks, "--seconds")); err == nil {
				v.AffinitySeconds = s
			}
			continue
		}
		share := remain * matchChance(r.toks)
		remain -= share
		ap, err := netip.ParseAddrPort(value(r.toks, "--to-destination"))
		if t != "DNAT" || err != nil {
			v.NotDNATed += share
			continue
		}
		if i, ok := byAddr[ap]; ok {
			v.Endpoints[i].Probability += share
			continue
		}
		byAddr[ap] = len(v.Endpoints)
		v.Endpoints = append(v.Endpoints, EndpointShare{Addr: ap, Probability: share})
	}
	v.NotDNATed += remain
}

// matchChance is the chance a rule matches a packet that reaches it, as
// far as its statistic match goes.
func matchChance(toks []string) float64 {
	if p, err := strconv.ParseFloat(value(toks, "--probability"), 64); err == nil {
		return p
	}
	if n, err := strconv.Atoi(value(toks, "--every")); err == nil && n > 0 {
		return 1 / float64(n)
	}
	return 1
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	name   string
	chains map[string][]savedRule
	order  []string // chains in the order their first rule appears
}

type savedRule struct {
	Rule
	toks []string
}

func readTable(ctx context.Context, r Runner, table string) (*savedTable, error) {
	data, err := r.Save(ctx, table)
	if err != nil {
		return nil, fmt.Errorf("reading the %s table: %w", table, err)
	}
	t := &savedTable{name: table, chains: map[string][]savedRule{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line, isRule := strings.CutPrefix(sc.Text(), "-A ")
		chain, spec, ok := strings.Cut(line, " ")
		if !isRule || !ok {
			continue
		}
		toks, err := splitRule(spec)
		if err != nil {
			return nil, fmt.Errorf("reading the %s table: chain %s: %w", table, chain, err)
		}
		if _, seen := t.chains[chain]; !seen {
			t.order = append(t.order, chain)
		}
		t.chains[chain] = append(t.chains[chain], savedRule{Rule: Rule{Table: table, Chain: chain, Spec: spec}, toks: toks})
	}
	return t, sc.Err()
}

// under returns the rules of every chain whose name starts with prefix.
func (t *savedTable) under(prefix string) []savedRule {
	var out []savedRule
	for _, ch := range t.order {
		if strings.HasPrefix(ch, prefix) {
			out = append(out, t.chains[ch]...)
		}
	}
	return out
}

// path returns the rules outside our chains that jump to top or to
// routed (the entry of routed packets), then routed's rules that lead on
// to top, then top's rules whose destination range holds ip.
func (t *savedTable) path(ip netip.Addr, top, routed string) []Rule {
	var out []Rule
	for _, ch := range t.order {
		if strings.HasPrefix(ch, chainPrefix) {
			continue
		}
		for _, r := range t.chains[ch] {
			if tg := target(r.toks); tg == top || tg == routed {
				out = append(out, r.Rule)
			}
		}
	}
	for _, r := range t.chains[routed] {
		if target(r.toks) == top {
			out = append(out, r.Rule)
		}
	}
	for _, r := range t.chains[top] {
		if p, ok := destination(r.toks); ok && p.Contains(ip) {
			out = append(out, r.Rule)
		}
	}
	return out
}

// portMatcher matches rules for one ClusterIP:port/protocol, as the
// backend writes them: -d IP/32 -p PROTO ... --dport PORT.
type portMatcher struct {
	vip   netip.AddrPort
	proto string
}

func (m portMatcher) matches(toks []string) bool {
	d, ok := destination(toks)
	if !ok || !d.IsSingleIP() || d.Addr().Unmap() != m.vip.Addr() {
		return false
	}
	p := value(toks, "-p")
	if p == "" {
		p = value(toks, "--protocol")
	}
	port := value(toks, "--dport")
	if port == "" {
		port = value(toks, "--destination-port")
	}
	return strings.EqualFold(p, m.proto) && port == strconv.Itoa(int(m.vip.Port()))
}

// destination is a rule's -d, when it has one that is not negated.
func destination(toks []string) (netip.Prefix, bool) {
	for i, t := range toks {
		if (t != "-d" && t != "--destination") || i+1 >= len(toks) || i > 0 && toks[i-1] == "!" {
			continue
		}
		s := toks[i+1]
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return netip.Prefix{}, false
			}
			return netip.PrefixFrom(a, a.BitLen()), true
		}
		p, err := netip.ParsePrefix(s)
		return p, err == nil
	}
	return netip.Prefix{}, false
}

// target is a rule's -j or -g target, "" when it has none. A comment that
// reads "-j" is no target.
func target(toks []string) string {
	for i, t := range toks {
		if (t == "-j" || t == "-g" || t == "--jump" || t == "--goto") && i+1 < len(toks) && (i == 0 || toks[i-1] != "--comment") {
			return toks[i+1]
		}
	}
	return ""
}

// value is the argument after the first opt, "" when there is none.
func value(toks []string, opt string) string {
	for i, t := range toks {
		if t == opt && i+1 < len(toks) {
			return toks[i+1]
		}
	}
	return ""
}
