package nftables

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// This file is kube-proxy's tracePacket idea over a knftables.Fake: a
// small interpreter of the rule syntax the Proxier writes, walking one
// packet through the hooks of our table. It knows only what it needs; any
// other syntax fails the test rather than silently matching or not.

// packet is one packet to trace, the first of its connection.
type packet struct {
	// routed is a packet from another machine (nat prerouting, then
	// filter forward, or filter input when its destination after DNAT
	// is this host); else a local process sent it (nat output, filter
	// output), then nat postrouting.
	routed   bool
	src, dst string
	proto    string // tcp, udp or sctp
	dport    uint16
}

func (p packet) String() string {
	path := "local"
	if p.routed {
		path = "routed"
	}
	return fmt.Sprintf("%s %s %s -> %s", path, p.proto, p.src, netip.AddrPortFrom(netip.MustParseAddr(p.dst), p.dport))
}

// outcome is one possible fate of a packet, with its probability.
type outcome struct {
	DNAT    string // ip:port, "" when not DNATed
	Reject  string // tcp-reset or icmp, "" when not refused
	Masq    bool
	Counted string // the named counter the packet counted in
	Update  string // the affinity sets the source was added to
	P       float64
}

func (o outcome) key() outcome { o.P = 0; return o }

func (o outcome) String() string {
	var parts []string
	if o.DNAT != "" {
		parts = append(parts, "DNAT "+o.DNAT)
	}
	if o.Reject != "" {
		parts = append(parts, "REJECT "+o.Reject)
	}
	if len(parts) == 0 {
		parts = append(parts, "untouched")
	}
	if o.Masq {
		parts = append(parts, "masq")
	}
	if o.Counted != "" {
		parts = append(parts, "counted")
	}
	if o.Update != "" {
		parts = append(parts, "affinity["+o.Update+"]")
	}
	return fmt.Sprintf("%s p=%.6f", strings.Join(parts, " "), o.P)
}

// pstate is the packet on one branch of the walk.
type pstate struct {
	dst     netip.Addr
	dport   uint16
	mark    uint32
	p       float64
	dnat    string
	masq    bool
	counted string
	update  []string
	verdict string // "" (fell through or returned), accept, reject
	reject  string
}

type tracer struct {
	t      testing.TB
	table  *knftables.FakeTable
	pkt    packet
	src    netip.Addr
	v6     bool
	seen   map[string]bool // affinity sets holding the source
	walked []string
	depth  int
}

// localAddrs are the tracer's host's own addresses: fib daddr type local
// matches them, and a routed packet to one is delivered (filter input).
var localAddrs = []netip.Prefix{
	netip.MustParsePrefix(hostIP + "/32"), netip.MustParsePrefix(hostIP6 + "/128"),
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
}

func isLocal(a netip.Addr) bool {
	for _, p := range localAddrs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// tracePacket returns the possible outcomes of pkt in f's table, merged
// and sorted, and the rules it walked. seen names the affinity sets that
// hold the packet's source.
func tracePacket(t testing.TB, f *knftables.Fake, pkt packet, seen ...string) ([]outcome, []string) {
	t.Helper()
	dst := netip.MustParseAddr(pkt.dst)
	src := netip.MustParseAddr(pkt.src)
	if src.Is6() != dst.Is6() {
		t.Fatalf("trace %v: families differ", pkt)
	}
	f.RLock()
	defer f.RUnlock()
	if f.Table == nil {
		return []outcome{{P: 1}}, nil
	}
	tr := &tracer{t: t, table: f.Table, pkt: pkt, src: src, v6: dst.Is6(), seen: map[string]bool{}}
	for _, s := range seen {
		tr.seen[s] = true
	}
	natHook := knftables.OutputHook
	if pkt.routed {
		natHook = knftables.PreroutingHook
	}
	var outs []outcome
	end := func(s pstate) {
		o := outcome{DNAT: s.dnat, Masq: s.masq, Counted: s.counted, Update: strings.Join(s.update, " "), P: s.p}
		if s.verdict == "reject" {
			o.Reject, o.Masq = s.reject, false
		}
		outs = append(outs, o)
	}
	for _, s := range tr.hook(knftables.NATType, natHook, pstate{dst: dst, dport: pkt.dport, p: 1}) {
		s.verdict = ""
		filterHook := knftables.OutputHook
		if pkt.routed {
			filterHook = knftables.ForwardHook
			if isLocal(s.dst) {
				filterHook = knftables.InputHook
			}
		}
		for _, s := range tr.hook(knftables.FilterType, filterHook, s) {
			if s.verdict == "reject" || filterHook == knftables.InputHook {
				end(s)
				continue
			}
			s.verdict = ""
			for _, s := range tr.hook(knftables.NATType, knftables.PostroutingHook, s) {
				end(s)
			}
		}
	}
	return mergeOutcomes(outs), tr.walked
}

func mergeOutcomes(outs []outcome) []outcome {
	sum := map[outcome]float64{}
	for _, o := range outs {
		sum[o.key()] += o.P
	}
	var merged []outcome
	for k, p := range sum {
		k.P = p
		merged = append(merged, k)
	}
	sort.Slice(merged, func(i, j int) bool { return merged[i].String() < merged[j].String() })
	return merged
}

// hook walks the base chains of our table at hook, of type typ, in
// priority order (there is one of each here).
func (tr *tracer) hook(typ knftables.BaseChainType, hook knftables.BaseChainHook, s pstate) []pstate {
	var names []string
	for name, ch := range tr.table.Chains {
		if ch.Hook != nil && *ch.Hook == hook && *ch.Type == typ {
			names = append(names, name)
		}
	}
	if len(names) > 1 {
		tr.t.Fatalf("%d base chains at %s %s: %v", len(names), typ, hook, names)
	}
	if len(names) == 0 {
		return []pstate{s}
	}
	out := []pstate{}
	for _, s := range tr.chain(names[0], s) {
		if s.verdict == "return" {
			s.verdict = ""
		}
		out = append(out, s)
	}
	return out
}

// chain walks one chain. A state that leaves with verdict "" fell off
// its end or returned; "goto" results are the target's.
func (tr *tracer) chain(name string, s pstate) []pstate {
	tr.depth++
	defer func() { tr.depth-- }()
	if tr.depth > 20 {
		tr.t.Fatalf("trace %v: chains nest too deep at %s", tr.pkt, name)
	}
	ch := tr.table.Chains[name]
	if ch == nil {
		tr.t.Fatalf("trace %v: no chain %s", tr.pkt, name)
	}
	states := []pstate{s}
	var done []pstate
	for _, r := range ch.Rules {
		var next []pstate
		for _, s := range states {
			tr.walked = append(tr.walked, fmt.Sprintf("%s: %s", name, r.Rule))
			for _, o := range tr.rule(r.Rule, s) {
				if o.verdict == "" {
					next = append(next, o)
				} else {
					done = append(done, o)
				}
			}
		}
		states = next
		if len(states) == 0 {
			break
		}
	}
	for i := range done {
		if done[i].verdict == "return" {
			done[i].verdict = ""
		}
	}
	return append(done, states...)
}

// rule applies one rule; states that go on to the next rule have verdict
// "", those that leave the chain "return", "accept" or "reject".
func (tr *tracer) rule(rule string, s pstate) []pstate {
	w := strings.Fields(rule)
	fail := func(why string) { tr.t.Fatalf("trace %v: rule %q: %s", tr.pkt, rule, why) }
	ipKW := "ip"
	if tr.v6 {
		ipKW = "ip6"
	}
	for i := 0; i < len(w); {
		rest := strings.Join(w[i:], " ")
		switch {
		case strings.HasPrefix(rest, ipKW+" daddr . meta l4proto . th dport "):
			i += 8
			key := []string{s.dst.String(), tr.pkt.proto, strconv.Itoa(int(s.dport))}
			if w[i] == "vmap" {
				return tr.verdictMap(w[i+1], key, s)
			}
			if !tr.inSet(w[i], key) {
				return []pstate{s}
			}
			i++
		case strings.HasPrefix(rest, "meta l4proto . th dport "):
			i += 5
			key := []string{tr.pkt.proto, strconv.Itoa(int(s.dport))}
			if w[i] == "vmap" {
				return tr.verdictMap(w[i+1], key, s)
			}
			if !tr.inSet(w[i], key) {
				return []pstate{s}
			}
			i++
		case w[i] == ipKW && (w[i+1] == "saddr" || w[i+1] == "daddr"):
			a := tr.src
			if w[i+1] == "daddr" {
				a = s.dst
			}
			neg, arg := false, w[i+2]
			if arg == "!=" {
				neg, arg = true, w[i+3]
				i++
			}
			i += 3
			var m bool
			switch {
			case strings.HasPrefix(arg, "@"):
				m = tr.seen[arg[1:]]
				if !strings.HasPrefix(arg, "@"+prefixAffinity) {
					fail("a set lookup the tracer does not know")
				}
			case strings.Contains(arg, "/"):
				m = netip.MustParsePrefix(arg).Contains(a)
			default:
				m = netip.MustParseAddr(arg) == a
			}
			if m == neg {
				return []pstate{s}
			}
		case rest == "meta l4proto tcp reject with tcp reset":
			if tr.pkt.proto != "tcp" {
				return []pstate{s}
			}
			s.verdict, s.reject = "reject", "tcp-reset"
			return []pstate{s}
		case strings.HasPrefix(rest, "meta l4proto ") && len(w) > i+3 && w[i+3] == "dnat":
			if w[i+2] != tr.pkt.proto {
				return []pstate{s}
			}
			i += 3
		case rest == "reject":
			s.verdict, s.reject = "reject", "icmp-port-unreachable"
			return []pstate{s}
		case strings.HasPrefix(rest, "fib daddr type local"):
			if !isLocal(s.dst) {
				return []pstate{s}
			}
			i += 4
		case strings.HasPrefix(rest, "ct state new"):
			i += 3
		case strings.HasPrefix(rest, "meta mark set meta mark "):
			v, err := strconv.ParseUint(w[i+6], 0, 32)
			if err != nil {
				fail(err.Error())
			}
			switch w[i+5] {
			case "|":
				s.mark |= uint32(v)
			case "^":
				s.mark ^= uint32(v)
			default:
				fail("unknown mark operator")
			}
			i += 7
		case strings.HasPrefix(rest, "meta mark & ") && len(w) >= i+6 && w[i+4] == "==":
			m, err1 := strconv.ParseUint(w[i+3], 0, 32)
			v, err2 := strconv.ParseUint(w[i+5], 0, 32)
			if err1 != nil || err2 != nil {
				fail("bad mark match")
			}
			if s.mark&uint32(m) != uint32(v) {
				return []pstate{s}
			}
			i += 6
		case w[i] == "counter" && len(w) > i+2 && w[i+1] == "name":
			s.counted = strings.Trim(w[i+2], `"`)
			i += 3
		case w[i] == "update" && len(w) >= i+5 && w[i+2] == "{" && w[i+4] == "saddr":
			s.update = append(s.update, strings.TrimPrefix(w[i+1], "@"))
			i += 6
		case w[i] == "numgen":
			return tr.numgen(rule, w[i:], s)
		case w[i] == "dnat" && w[i+1] == "to":
			s.dnat = w[i+2]
			ap := netip.MustParseAddrPort(w[i+2])
			s.dst, s.dport = ap.Addr(), ap.Port()
			s.verdict = "accept"
			return []pstate{s}
		case rest == "masquerade fully-random":
			s.masq, s.verdict = true, "accept"
			return []pstate{s}
		case w[i] == "jump" || w[i] == "goto":
			return tr.follow(w[i], w[i+1], s)
		case rest == "return":
			s.verdict = "return"
			return []pstate{s}
		default:
			fail(fmt.Sprintf("the tracer does not know %q", rest))
		}
	}
	return []pstate{s}
}

// follow jumps or goes to chain; after a jump what falls off goes on.
func (tr *tracer) follow(how, chain string, s pstate) []pstate {
	out := tr.chain(chain, s)
	if how == "goto" {
		for i := range out {
			if out[i].verdict == "" {
				// A goto's chain falling off returns from ours.
				out[i].verdict = "return"
			}
		}
	}
	return out
}

func (tr *tracer) verdictMap(ref string, key []string, s pstate) []pstate {
	m := tr.table.Maps[strings.TrimPrefix(ref, "@")]
	if m == nil {
		tr.t.Fatalf("trace %v: no map %s", tr.pkt, ref)
	}
	for _, e := range m.Elements {
		if sameKey(e.Key, key) {
			f := strings.Fields(e.Value[0])
			return tr.follow(f[0], f[1], s)
		}
	}
	return []pstate{s}
}

func (tr *tracer) inSet(ref string, key []string) bool {
	set := tr.table.Sets[strings.TrimPrefix(ref, "@")]
	if set == nil {
		tr.t.Fatalf("trace %v: no set %s", tr.pkt, ref)
	}
	for _, e := range set.Elements {
		if sameKey(e.Key, key) {
			return true
		}
	}
	return false
}

// numgen branches on "numgen random mod M 0": the rest of the rule with
// probability 1/M, the next rule with the rest.
func (tr *tracer) numgen(rule string, w []string, s pstate) []pstate {
	if len(w) < 6 || w[1] != "random" || w[2] != "mod" || w[4] != "0" {
		tr.t.Fatalf("trace %v: numgen in %q", tr.pkt, rule)
	}
	m, err := strconv.Atoi(w[3])
	if err != nil || m < 1 {
		tr.t.Fatalf("trace %v: numgen modulus in %q", tr.pkt, rule)
	}
	hit := s
	hit.p = s.p / float64(m)
	hit.update = append([]string(nil), s.update...)
	out := tr.rule(strings.Join(w[5:], " "), hit)
	if m > 1 {
		miss := s
		miss.p = s.p * float64(m-1) / float64(m)
		out = append(out, miss)
	}
	return out
}
