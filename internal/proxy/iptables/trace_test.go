package iptables

import (
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// This file is kube-proxy's tracePacket idea for our rules: a small
// interpreter of the rule syntax the Proxier generates, run over a Fake's
// tables. It knows only what it needs; anything else fails the test rather
// than silently matching or not matching.

// packet is one packet to trace.
type packet struct {
	// routed is a packet from another machine (nat PREROUTING, then
	// filter FORWARD, or filter INPUT when it is for one of this host's
	// addresses after nat); otherwise a local process sent it (nat
	// OUTPUT, filter OUTPUT). Every packet is the first of its
	// connection (conntrack state NEW).
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

// outcome is one possible fate of a packet. The trace returns the set of
// possible fates, each with its probability.
type outcome struct {
	DNAT   string // "ip:port" the packet was DNATed to, "" when it was not
	Reject string // the --reject-with of the REJECT that refused it
	Drop   bool
	Masq   bool   // masqueraded in nat POSTROUTING
	Recent string // xt_recent lists the source was added to (--set), space-separated
	P      float64
}

func (o outcome) key() outcome { o.P = 0; return o }

func (o outcome) String() string {
	var parts []string
	if o.DNAT != "" {
		parts = append(parts, "DNAT "+o.DNAT)
	}
	if o.Drop {
		parts = append(parts, "DROP")
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
	if o.Recent != "" {
		parts = append(parts, "recent["+o.Recent+"]")
	}
	return fmt.Sprintf("%s p=%.6f", strings.Join(parts, " "), o.P)
}

// tracer walks one packet through a Fake.
type tracer struct {
	t testing.TB
	f *Fake
	// seen are the xt_recent lists that already hold the packet's source:
	// --update and --rcheck match only for those.
	seen   map[string]bool
	pkt    packet
	v6     bool
	walked []string
}

// pstate is the packet on one branch of the walk.
type pstate struct {
	dst     netip.Addr
	dport   uint16
	mark    uint32
	p       float64
	dnat    string
	masq    bool
	recent  []string
	verdict string // "" (fell through or RETURN), ACCEPT, DROP, REJECT, DNAT
	reject  string
}

// tracePacket returns the possible outcomes of pkt in f, merged and sorted,
// and the rules it walked. seen names the xt_recent lists that hold the
// packet's source.
func tracePacket(t testing.TB, f *Fake, pkt packet, seen ...string) ([]outcome, []string) {
	t.Helper()
	dst, err := netip.ParseAddr(pkt.dst)
	if err != nil {
		t.Fatalf("trace %v: %v", pkt, err)
	}
	src, err := netip.ParseAddr(pkt.src)
	if err != nil || src.Is6() != dst.Is6() {
		t.Fatalf("trace %v: bad source address", pkt)
	}
	tr := &tracer{t: t, f: f, pkt: pkt, v6: dst.Is6(), seen: map[string]bool{}}
	for _, s := range seen {
		tr.seen[s] = true
	}
	natHook := "OUTPUT"
	if pkt.routed {
		natHook = "PREROUTING"
	}
	var outs []outcome
	end := func(s pstate) {
		o := outcome{DNAT: s.dnat, Masq: s.masq, Recent: strings.Join(s.recent, " "), P: s.p}
		switch s.verdict {
		case "DROP":
			o.Drop, o.Masq = true, false
		case "REJECT":
			o.Reject, o.Masq = s.reject, false
		}
		outs = append(outs, o)
	}
	for _, s := range tr.hook("nat", natHook, pstate{dst: dst, dport: pkt.dport, p: 1}) {
		if s.verdict == "DROP" {
			end(s)
			continue
		}
		s.verdict = ""
		filterHook := "OUTPUT"
		if pkt.routed {
			filterHook = "FORWARD"
			if isLocal(s.dst) {
				filterHook = "INPUT"
			}
		}
		for _, s := range tr.hook("filter", filterHook, s) {
			if s.verdict == "DROP" || s.verdict == "REJECT" {
				end(s)
				continue
			}
			s.verdict = ""
			if filterHook == "INPUT" {
				end(s) // delivered to this host: no POSTROUTING
				continue
			}
			for _, s := range tr.hook("nat", "POSTROUTING", s) {
				end(s)
			}
		}
	}
	return mergeOutcomes(outs), tr.walked
}

// localAddrs are the tracer's host's own addresses: -m addrtype
// --dst-type LOCAL matches them, and a routed packet to one of them is
// delivered (filter INPUT) instead of forwarded.
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

// hook walks a built-in chain; a packet that falls off its end gets the
// chain's policy.
func (tr *tracer) hook(table, chain string, s pstate) []pstate {
	tr.t.Helper()
	tr.logf(0, "%s %s: %s %s -> %s (p=%.6f)", table, chain, tr.pkt.proto, tr.pkt.src, netip.AddrPortFrom(s.dst, s.dport), s.p)
	out := tr.chain(table, chain, chain, s, 0)
	for i := range out {
		if out[i].verdict == "" {
			out[i].verdict = tr.f.Policy(table, chain)
		}
	}
	return out
}

func (tr *tracer) logf(depth int, format string, args ...any) {
	tr.walked = append(tr.walked, strings.Repeat("  ", depth)+fmt.Sprintf(format, args...))
}

func (tr *tracer) fatalf(format string, args ...any) {
	tr.t.Helper()
	tr.t.Fatalf("trace %v: %s\nrules walked:\n%s", tr.pkt, fmt.Sprintf(format, args...), strings.Join(tr.walked, "\n"))
}

// chain returns the states in which the packet leaves chain: with a
// verdict, or with none when it fell off the end or hit RETURN.
func (tr *tracer) chain(table, hook, chain string, s pstate, depth int) []pstate {
	tr.t.Helper()
	if depth > 20 {
		tr.fatalf("chains nested more than 20 deep: a loop?")
	}
	rules := tr.f.Rules(table, chain)
	if rules == nil {
		tr.fatalf("no chain %s in table %s", chain, table)
	}
	return tr.from(table, hook, chain, rules, 0, s, depth)
}

// from walks rules[i:] of a chain.
func (tr *tracer) from(table, hook, chain string, rules []string, i int, s pstate, depth int) []pstate {
	tr.t.Helper()
	for ; i < len(rules); i++ {
		r := tr.parse(table, rules[i])
		branches := r.eval(s)
		if len(branches) == 1 && !branches[0].ok {
			tr.logf(depth+1, "%s %s#%d no match: %s", table, chain, i+1, rules[i])
			s = branches[0].s
			continue
		}
		var out []pstate
		for _, b := range branches {
			switch {
			case b.s.p == 0:
			case !b.ok:
				tr.logf(depth+1, "%s %s#%d no match (p=%.6f): %s", table, chain, i+1, b.s.p, rules[i])
				out = append(out, tr.from(table, hook, chain, rules, i+1, b.s, depth)...)
			default:
				tr.logf(depth+1, "%s %s#%d MATCH (p=%.6f): %s", table, chain, i+1, b.s.p, rules[i])
				out = append(out, tr.target(table, hook, chain, rules, i, r, b.s, depth)...)
			}
		}
		return out
	}
	return []pstate{s}
}

// target applies the target of rules[i], which matched.
func (tr *tracer) target(table, hook, chain string, rules []string, i int, r *rule, s pstate, depth int) []pstate {
	tr.t.Helper()
	switch r.target {
	case "":
		return tr.from(table, hook, chain, rules, i+1, s, depth)
	case "RETURN":
		s.verdict = ""
		return []pstate{s}
	case "ACCEPT", "DROP":
		s.verdict = r.target
		return []pstate{s}
	case "MARK":
		s.mark = r.setMark(s.mark)
		return tr.from(table, hook, chain, rules, i+1, s, depth)
	case "REJECT":
		if hook != "INPUT" && hook != "FORWARD" && hook != "OUTPUT" {
			tr.fatalf("REJECT reached from %s %s: the kernel refuses it there", table, hook)
		}
		s.verdict, s.reject = "REJECT", r.rejectWith
		return []pstate{s}
	case "DNAT":
		if hook != "PREROUTING" && hook != "OUTPUT" {
			tr.fatalf("DNAT reached from nat %s: the kernel refuses it there", hook)
		}
		s.verdict = "DNAT"
		s.dnat = r.dnat.String()
		s.dst, s.dport = r.dnat.Addr(), r.dnat.Port()
		return []pstate{s}
	case "MASQUERADE":
		if hook != "POSTROUTING" {
			tr.fatalf("MASQUERADE reached from nat %s: the kernel refuses it there", hook)
		}
		s.verdict, s.masq = "ACCEPT", true
		return []pstate{s}
	}
	// A jump to a user chain: what falls through comes back here, or
	// after a goto, to whoever called this chain.
	var out []pstate
	for _, s := range tr.chain(table, hook, r.target, s, depth+1) {
		if s.verdict != "" || r.gotoChain {
			out = append(out, s)
			continue
		}
		out = append(out, tr.from(table, hook, chain, rules, i+1, s, depth)...)
	}
	return out
}

// rule is a parsed rule: matches, evaluated in order, and a target.
type rule struct {
	conds  []cond
	target string // "" (none), a built-in target, or a user chain
	// gotoChain: -g, not -j: what falls off the target chain leaves the
	// chain of this rule too.
	gotoChain bool

	markOp     string // MARK: --or-mark, --xor-mark, --set-xmark, --set-mark, --and-mark
	markVal    uint32
	markMask   uint32
	dnat       netip.AddrPort
	rejectWith string
}

// cond is one match: it splits a state into the branch where it matches
// and the branch where it does not.
type cond func(pstate) []branch

type branch struct {
	s  pstate
	ok bool
}

func (r *rule) eval(s pstate) []branch {
	bs := []branch{{s, true}}
	for _, c := range r.conds {
		var next []branch
		for _, b := range bs {
			if !b.ok {
				next = append(next, b)
				continue
			}
			next = append(next, c(b.s)...)
		}
		bs = next
	}
	return bs
}

func (r *rule) setMark(m uint32) uint32 {
	switch r.markOp {
	case "--or-mark":
		return m | r.markVal
	case "--xor-mark":
		return m ^ r.markVal
	case "--and-mark":
		return m & r.markVal
	case "--set-xmark":
		return (m &^ r.markMask) ^ r.markVal
	default: // --set-mark
		return (m &^ r.markMask) | r.markVal
	}
}

func yes(b bool) cond {
	return func(s pstate) []branch { return []branch{{s, b}} }
}

// parse parses one stored rule; what it does not know fails the test.
func (tr *tracer) parse(table, text string) *rule {
	tr.t.Helper()
	toks, err := splitRule(text)
	if err != nil {
		tr.fatalf("%v", err)
	}
	fail := func(format string, args ...any) {
		tr.t.Helper()
		tr.fatalf("rule %q: %s", text, fmt.Sprintf(format, args...))
	}
	r := &rule{}
	proto := ""
	i := 0
	value := func(opt string) string {
		tr.t.Helper()
		i++
		if i >= len(toks) {
			fail("%s needs a value", opt)
		}
		return toks[i]
	}
	// moduleOpts collects "[!] --opt [value...]" after -m or -j, up to the
	// next top-level option; each value is the tokens that follow.
	type opt struct {
		name string
		neg  bool
		args []string
	}
	moduleOpts := func() []opt {
		var opts []opt
		for i+1 < len(toks) {
			t, neg := toks[i+1], false
			if t == "!" && i+2 < len(toks) && strings.HasPrefix(toks[i+2], "--") {
				t, neg = toks[i+2], true
				i++
			}
			if !strings.HasPrefix(t, "--") {
				break
			}
			i++
			o := opt{name: t, neg: neg}
			for i+1 < len(toks) && !strings.HasPrefix(toks[i+1], "-") && toks[i+1] != "!" {
				i++
				o.args = append(o.args, toks[i])
			}
			opts = append(opts, o)
		}
		return opts
	}
	one := func(o opt) string {
		tr.t.Helper()
		if len(o.args) != 1 {
			fail("%s takes one value, got %q", o.name, o.args)
		}
		return o.args[0]
	}
	neg := false
	for ; i < len(toks); i++ {
		tok := toks[i]
		if tok == "!" {
			neg = true
			continue
		}
		negated := neg
		neg = false
		switch tok {
		case "-s", "-d":
			v := value(tok)
			pfx, err := netip.ParsePrefix(v)
			if err != nil {
				a, err2 := netip.ParseAddr(v)
				if err2 != nil {
					fail("%s %q: %v", tok, v, err)
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			if pfx.Addr().Is6() != tr.v6 {
				fail("%s %s: wrong address family for this table", tok, v)
			}
			pfx = pfx.Masked()
			src := netip.MustParseAddr(tr.pkt.src)
			isSrc := tok == "-s"
			r.conds = append(r.conds, func(s pstate) []branch {
				a := s.dst
				if isSrc {
					a = src
				}
				return []branch{{s, pfx.Contains(a) != negated}}
			})
		case "-p":
			proto = value(tok)
			if negated {
				fail("! -p is not modelled")
			}
			switch proto {
			case "tcp", "udp", "sctp":
			default:
				fail("protocol %q is not modelled", proto)
			}
			r.conds = append(r.conds, yes(proto == tr.pkt.proto))
		case "-m":
			if negated {
				fail("! -m makes no sense")
			}
			mod := value(tok)
			opts := moduleOpts()
			switch mod {
			case "tcp", "udp", "sctp":
				if proto != mod {
					fail("-m %s without -p %s: iptables refuses it", mod, mod)
				}
				for _, o := range opts {
					if o.name != "--dport" && o.name != "--destination-port" {
						fail("-m %s %s is not modelled", mod, o.name)
					}
					port, err := strconv.ParseUint(one(o), 10, 16)
					if err != nil {
						fail("--dport %q: %v", one(o), err)
					}
					n := o.neg
					r.conds = append(r.conds, func(s pstate) []branch { return []branch{{s, (s.dport == uint16(port)) != n}} })
				}
				if len(opts) == 0 {
					fail("-m %s without options", mod)
				}
			case "comment":
				if len(opts) != 1 || opts[0].name != "--comment" || opts[0].neg {
					fail("-m comment wants exactly --comment TEXT")
				}
				one(opts[0])
			case "statistic":
				var mode, prob string
				for _, o := range opts {
					switch {
					case o.neg:
						fail("! %s is not modelled", o.name)
					case o.name == "--mode":
						mode = one(o)
					case o.name == "--probability":
						prob = one(o)
					default:
						fail("-m statistic %s is not modelled", o.name)
					}
				}
				if mode != "random" {
					fail("-m statistic --mode %q is not modelled", mode)
				}
				pr, err := strconv.ParseFloat(prob, 64)
				if err != nil || pr < 0 || pr > 1 {
					fail("--probability %q is not a probability", prob)
				}
				r.conds = append(r.conds, func(s pstate) []branch {
					in, out := s, s
					in.p, out.p = s.p*pr, s.p*(1-pr)
					return []branch{{in, true}, {out, false}}
				})
			case "recent":
				var name, cmd string
				var n, reap, seconds bool
				for _, o := range opts {
					switch o.name {
					case "--name":
						name = one(o)
					case "--set", "--update", "--rcheck":
						if cmd != "" {
							fail("-m recent with both %s and %s", cmd, o.name)
						}
						if len(o.args) != 0 {
							fail("%s takes no value", o.name)
						}
						cmd, n = o.name, o.neg
					case "--seconds":
						if v, err := strconv.ParseUint(one(o), 10, 32); err != nil || v == 0 {
							fail("--seconds %q", one(o))
						}
						seconds = true
					case "--reap":
						reap = true
					case "--rsource":
					default:
						fail("-m recent %s is not modelled", o.name)
					}
				}
				switch {
				case name == "":
					fail("-m recent without --name")
				case cmd == "":
					fail("-m recent without --set, --update or --rcheck")
				case reap && !seconds:
					fail("--reap without --seconds: iptables refuses it")
				case cmd == "--set" && (seconds || n):
					fail("--set with --seconds or !")
				}
				if cmd == "--set" {
					r.conds = append(r.conds, func(s pstate) []branch {
						s.recent = append(slices.Clip(s.recent), name)
						return []branch{{s, true}}
					})
				} else {
					r.conds = append(r.conds, yes(tr.seen[name] != n))
				}
			case "addrtype":
				if len(opts) != 1 || opts[0].name != "--dst-type" || one(opts[0]) != "LOCAL" {
					fail("-m addrtype: only [!] --dst-type LOCAL is modelled")
				}
				n := opts[0].neg
				r.conds = append(r.conds, func(s pstate) []branch { return []branch{{s, isLocal(s.dst) != n}} })
			case "conntrack":
				if len(opts) != 1 || opts[0].name != "--ctstate" {
					fail("-m conntrack: only [!] --ctstate STATES is modelled")
				}
				states := strings.Split(one(opts[0]), ",")
				for _, st := range states {
					if !slices.Contains([]string{"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"}, st) {
						fail("--ctstate %q: unknown state", st)
					}
				}
				// Every traced packet is the first of its connection.
				r.conds = append(r.conds, yes(slices.Contains(states, "NEW") != opts[0].neg))
			case "mark":
				if len(opts) != 1 || opts[0].name != "--mark" {
					fail("-m mark wants exactly [!] --mark VALUE[/MASK]")
				}
				val, mask := tr.markValue(fail, one(opts[0]))
				n := opts[0].neg
				r.conds = append(r.conds, func(s pstate) []branch { return []branch{{s, (s.mark&mask == val) != n}} })
			default:
				fail("match module %q is not modelled", mod)
			}
		case "-j", "-g":
			if negated {
				fail("! %s makes no sense", tok)
			}
			r.target = value(tok)
			r.gotoChain = tok == "-g"
			opts := moduleOpts()
			if i+1 != len(toks) {
				fail("%q after the target", toks[i+1:])
			}
			m := map[string][]string{}
			for _, o := range opts {
				if _, dup := m[o.name]; o.neg || dup {
					fail("%s: negated or repeated in a target", o.name)
				}
				m[o.name] = o.args
			}
			tr.parseTarget(fail, table, r, proto, m)
		default:
			fail("%q is not modelled", tok)
		}
	}
	if neg {
		fail("dangling !")
	}
	return r
}

func (tr *tracer) markValue(fail func(string, ...any), s string) (val, mask uint32) {
	tr.t.Helper()
	v, m, hasMask := strings.Cut(s, "/")
	x, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		fail("mark %q: %v", s, err)
	}
	mask = math.MaxUint32
	if hasMask {
		y, err := strconv.ParseUint(m, 0, 32)
		if err != nil {
			fail("mark %q: %v", s, err)
		}
		mask = uint32(y)
	}
	return uint32(x), mask
}

func (tr *tracer) parseTarget(fail func(string, ...any), table string, r *rule, proto string, opts map[string][]string) {
	tr.t.Helper()
	only := func(allowed ...string) {
		tr.t.Helper()
		for k := range opts {
			if !slices.Contains(allowed, k) {
				fail("-j %s %s is not modelled", r.target, k)
			}
		}
	}
	one := func(k string) string {
		tr.t.Helper()
		v, ok := opts[k]
		if !ok || len(v) != 1 {
			fail("-j %s needs %s VALUE", r.target, k)
		}
		return v[0]
	}
	switch r.target {
	case "ACCEPT", "DROP", "RETURN":
		only()
	case "MARK":
		if len(opts) != 1 {
			fail("-j MARK wants exactly one operation")
		}
		for k := range opts {
			r.markOp = k
		}
		switch r.markOp {
		case "--or-mark", "--xor-mark", "--and-mark":
			var mask uint32
			r.markVal, mask = tr.markValue(fail, one(r.markOp))
			if mask != math.MaxUint32 {
				fail("%s takes no mask", r.markOp)
			}
		case "--set-xmark", "--set-mark":
			r.markVal, r.markMask = tr.markValue(fail, one(r.markOp))
		default:
			fail("-j MARK %s is not modelled", r.markOp)
		}
	case "DNAT":
		if table != "nat" {
			fail("DNAT in table %s", table)
		}
		only("--to-destination")
		to := one("--to-destination")
		ap, err := netip.ParseAddrPort(to)
		if err != nil {
			fail("--to-destination %q (only ip:port is modelled): %v", to, err)
		}
		if ap.Addr().Is6() != tr.v6 {
			fail("--to-destination %s: wrong address family for this table", to)
		}
		if proto == "" {
			fail("DNAT to a port without -p: iptables refuses it")
		}
		r.dnat = ap
	case "REJECT":
		if table != "filter" {
			fail("REJECT in table %s", table)
		}
		only("--reject-with")
		r.rejectWith = one("--reject-with")
		v4 := []string{"icmp-net-unreachable", "icmp-host-unreachable", "icmp-port-unreachable", "icmp-proto-unreachable",
			"icmp-net-prohibited", "icmp-host-prohibited", "icmp-admin-prohibited", "tcp-reset"}
		v6 := []string{"icmp6-no-route", "icmp6-adm-prohibited", "icmp6-addr-unreachable", "icmp6-port-unreachable", "tcp-reset"}
		allowed := v4
		if tr.v6 {
			allowed = v6
		}
		if !slices.Contains(allowed, r.rejectWith) {
			fail("--reject-with %s is not valid for this family", r.rejectWith)
		}
		if r.rejectWith == "tcp-reset" && proto != "tcp" {
			fail("--reject-with tcp-reset without -p tcp: iptables refuses it")
		}
	case "MASQUERADE":
		if table != "nat" {
			fail("MASQUERADE in table %s", table)
		}
		only("--random-fully", "--random")
		for k, v := range opts {
			if len(v) != 0 {
				fail("%s takes no value", k)
			}
		}
	default:
		if fakeTargets[r.target] {
			fail("target %s is not modelled", r.target)
		}
		if r.gotoChain && r.target == "" {
			fail("-g without a chain")
		}
		if len(opts) != 0 {
			fail("options after a jump to chain %s", r.target)
		}
		if tr.f.Rules(table, r.target) == nil {
			fail("jump to chain %s, which does not exist", r.target)
		}
	}
}

// checkFlow traces pkt and compares the outcomes with want (probabilities
// to 1e-6); a failure prints the packet, both sets and the rules walked.
func checkFlow(t *testing.T, f *Fake, pkt packet, want []outcome, seen ...string) {
	t.Helper()
	got, walked := tracePacket(t, f, pkt, seen...)
	want = mergeOutcomes(want)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].key() == want[i].key() && math.Abs(got[i].P-want[i].P) < 1e-6
	}
	if !ok {
		t.Errorf("packet %v:\n got: %s\nwant: %s\nrules walked:\n%s", pkt, fmtOutcomes(got), fmtOutcomes(want), strings.Join(walked, "\n"))
	}
}

func fmtOutcomes(os []outcome) string {
	if len(os) == 0 {
		return "(none)"
	}
	s := make([]string, len(os))
	for i, o := range os {
		s[i] = o.String()
	}
	return strings.Join(s, "; ")
}

// untouched is the fate of a packet no rule of ours is about.
var untouched = []outcome{{P: 1}}

func rejected(with string) []outcome { return []outcome{{Reject: with, P: 1}} }

// shares is an even spread over endpoints.
func shares(masq bool, eps ...string) []outcome {
	var out []outcome
	for _, ep := range eps {
		out = append(out, outcome{DNAT: ep, Masq: masq, P: 1 / float64(len(eps))})
	}
	return out
}

// fatalRecorder is a testing.TB whose Fatalf ends only the goroutine, so
// that a test can check the tracer fails where it must.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// traceFails returns the tracer's fatal message, "" if it did not fail.
func traceFails(t *testing.T, f *Fake, pkt packet) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tracePacket(r, f, pkt)
	}()
	<-done
	return r.msg
}

func TestTracerSemantics(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, `*nat
:LADDER - [0:0]
:SKIP - [0:0]
-A OUTPUT -j SKIP
-A OUTPUT ! -d 10.0.0.0/8 -j RETURN
-A OUTPUT -s 192.168.0.0/16 -d 10.0.0.1/32 -p udp -m udp --dport 53 -j LADDER
-A SKIP -j MARK --set-xmark 0x1/0xff
-A SKIP -j RETURN
-A SKIP -j MARK --or-mark 0x2
-A LADDER -p udp -m mark --mark 0x1/0xff -m statistic --mode random --probability 0.2500000000 -j DNAT --to-destination 10.1.0.1:53
-A LADDER -p udp -m statistic --mode random --probability 0.5 -m recent --name L2 --set --rsource -j DNAT --to-destination 10.1.0.2:53
-A LADDER -p udp -j DNAT --to-destination 10.1.0.3:53
-A POSTROUTING -m mark ! --mark 0x2/0x2 -j MASQUERADE
COMMIT
*filter
:OUTPUT DROP [0:0]
-A OUTPUT -d 10.1.0.3/32 -j ACCEPT
-A OUTPUT -d 10.1.0.2/32 -p udp -j REJECT --reject-with icmp-port-unreachable
COMMIT
`)
	checkFlow(t, f, packet{src: "192.168.0.1", dst: "10.0.0.1", proto: "udp", dport: 53}, []outcome{
		{DNAT: "10.1.0.1:53", Drop: true, P: 0.25}, // filter OUTPUT's policy
		{DNAT: "10.1.0.2:53", Reject: "icmp-port-unreachable", Recent: "L2", P: 0.375},
		{DNAT: "10.1.0.3:53", Masq: true, P: 0.375},
	})
	// Not from 192.168/16: no DNAT, and the policy drops it.
	checkFlow(t, f, packet{src: "172.16.0.1", dst: "10.0.0.1", proto: "udp", dport: 53}, []outcome{{Drop: true, P: 1}})
	// ! -d: RETURN from a built-in chain is its policy (ACCEPT).
	checkFlow(t, f, packet{src: "192.168.0.1", dst: "192.0.2.1", proto: "udp", dport: 53}, []outcome{{Drop: true, P: 1}})
}

// TestTracerGoto: what falls off a chain entered by -g goes back to the
// chain that jumped to the one with the goto, past the rest of that one.
func TestTracerGoto(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, `*nat
:G - [0:0]
:H - [0:0]
-A OUTPUT -j H
-A OUTPUT -p tcp -j DNAT --to-destination 10.1.0.9:80
-A H -g G
-A H -p tcp -j DNAT --to-destination 10.1.0.8:80
-A G -d 10.0.0.2/32 -p tcp -j DNAT --to-destination 10.1.0.7:80
COMMIT
`)
	checkFlow(t, f, packet{src: "192.168.0.1", dst: "10.0.0.1", proto: "tcp", dport: 80}, []outcome{{DNAT: "10.1.0.9:80", P: 1}})
	checkFlow(t, f, packet{src: "192.168.0.1", dst: "10.0.0.2", proto: "tcp", dport: 80}, []outcome{{DNAT: "10.1.0.7:80", P: 1}})
}

func TestTracerRecent(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, `*nat
-A OUTPUT -p tcp -m recent --name A --update --seconds 60 --reap --rsource -j DNAT --to-destination 10.1.0.1:80
-A OUTPUT -p tcp -m recent --name B --rcheck --seconds 60 -j DNAT --to-destination 10.1.0.2:80
-A OUTPUT -p tcp -j DNAT --to-destination 10.1.0.3:80
COMMIT
`)
	pkt := packet{src: "192.168.0.1", dst: "10.0.0.1", proto: "tcp", dport: 80}
	checkFlow(t, f, pkt, []outcome{{DNAT: "10.1.0.3:80", P: 1}})
	checkFlow(t, f, pkt, []outcome{{DNAT: "10.1.0.1:80", P: 1}}, "A")
	checkFlow(t, f, pkt, []outcome{{DNAT: "10.1.0.2:80", P: 1}}, "B")
}

func TestTracerIPv6(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, `*nat
-A PREROUTING -d fd00::1/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00:1::1]:8080
COMMIT
*filter
-A FORWARD -d fd00::2/128 -p tcp -j REJECT --reject-with tcp-reset
COMMIT
`)
	checkFlow(t, f, packet{routed: true, src: "fd00::9", dst: "fd00::1", proto: "tcp", dport: 80}, []outcome{{DNAT: "[fd00:1::1]:8080", P: 1}})
	checkFlow(t, f, packet{routed: true, src: "fd00::9", dst: "fd00::2", proto: "tcp", dport: 80}, rejected("tcp-reset"))
	// The routed path does not go through OUTPUT, nor the local one
	// through PREROUTING and FORWARD.
	checkFlow(t, f, packet{src: "fd00::9", dst: "fd00::1", proto: "tcp", dport: 80}, untouched)
}

// TestTracerRefusesUnknownSyntax: a rule the tracer does not understand, or
// that iptables or the kernel would refuse, fails the test instead of being
// guessed at.
func TestTracerRefusesUnknownSyntax(t *testing.T) {
	for _, c := range []struct {
		table, chain, rule, want string
	}{
		{"nat", "OUTPUT", "-i eth0 -j ACCEPT", `"-i" is not modelled`},
		{"nat", "OUTPUT", "-m addrtype --src-type LOCAL -j ACCEPT", "only [!] --dst-type LOCAL is modelled"},
		{"nat", "OUTPUT", "-m conntrack --ctstate BOGUS -j ACCEPT", "unknown state"},
		{"nat", "OUTPUT", "-m set --match-set X dst -j ACCEPT", `match module "set"`},
		{"nat", "OUTPUT", "-p tcp -m tcp --sport 80 -j ACCEPT", "--sport is not modelled"},
		{"nat", "OUTPUT", "-m tcp --dport 80 -j ACCEPT", "without -p tcp"},
		{"nat", "OUTPUT", "-p icmp -j ACCEPT", `protocol "icmp"`},
		{"nat", "OUTPUT", "-m statistic --mode nth --every 2 -j ACCEPT", "not modelled"},
		{"nat", "OUTPUT", "-m recent --name X --set --rdest -j ACCEPT", "--rdest is not modelled"},
		{"nat", "OUTPUT", "-m recent --name X --update --reap -j ACCEPT", "--reap without --seconds"},
		{"nat", "OUTPUT", "-j SNAT --to-source 10.0.0.1", "target SNAT is not modelled"},
		{"nat", "OUTPUT", "-p tcp -j DNAT --to-destination 10.0.0.1:80 --random", "--random is not modelled"},
		{"nat", "OUTPUT", "-j DNAT --to-destination 10.0.0.1:80", "without -p"},
		{"nat", "OUTPUT", "-p tcp -j DNAT --to-destination 10.0.0.1", "only ip:port"},
		{"nat", "OUTPUT", "-p tcp -j DNAT --to-destination [fd00::1]:80", "wrong address family"},
		{"nat", "OUTPUT", "-d fd00::/64 -j ACCEPT", "wrong address family"},
		{"nat", "OUTPUT", "-j MARK --set-mark 0x1 --or-mark 0x2", "exactly one operation"},
		{"nat", "OUTPUT", "-j MASQUERADE", "MASQUERADE reached from nat OUTPUT"},
		{"nat", "POSTROUTING", "-p tcp -j DNAT --to-destination 10.0.0.1:80", "DNAT reached from nat POSTROUTING"},
		{"filter", "OUTPUT", "-p udp -j REJECT --reject-with tcp-reset", "without -p tcp"},
		{"filter", "OUTPUT", "-j REJECT --reject-with icmp6-port-unreachable", "not valid for this family"},
		{"filter", "OUTPUT", "-j LOG --log-prefix x", "target LOG is not modelled"},
		{"filter", "OUTPUT", "-j ACCEPT --foo", "-j ACCEPT --foo is not modelled"},
	} {
		t.Run(c.rule, func(t *testing.T) {
			f := NewFake()
			mustRestore(t, f, "*"+c.table+"\n-A "+c.chain+" "+c.rule+"\nCOMMIT\n")
			pkt := packet{src: "192.168.0.1", dst: "10.0.0.1", proto: "tcp", dport: 80}
			msg := traceFails(t, f, pkt)
			if !strings.Contains(msg, c.want) {
				t.Errorf("tracing through %q: got failure %q, want one containing %q", c.rule, msg, c.want)
			}
			if msg != "" && !strings.Contains(msg, "rules walked:") {
				t.Errorf("failure does not print the rules walked: %q", msg)
			}
		})
	}
}
