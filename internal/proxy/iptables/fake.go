package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Fake is an in-memory Runner for tests. It keeps the nat, filter, mangle
// and raw tables of one IP family, with their built-in chains, and stores
// every rule as its normalized text (the tokens of the rule, separated by
// one space, quoted where needed as iptables-save would).
//
// Unlike knftables' fake, Restore is truly transactional: the script is
// applied to a copy of the tables, which replaces them only when every line
// succeeded, so a test can never observe a half-applied sync.
type Fake struct {
	mu     sync.Mutex
	tables map[string]*fakeTable

	// Restores counts Restore calls, failed ones included.
	Restores int
	// LastScript is the script of the last Restore call, failed or not.
	LastScript []byte
	// FailNext, when set, makes the next Restore return it without
	// changing anything; it is cleared by that call.
	FailNext error
	// Unsupported names match extensions this kernel lacks: a rule with
	// "-m NAME" fails to restore, as iptables-restore fails when it
	// cannot load the extension.
	Unsupported map[string]bool
	// AfterSave, when set, runs after each Save has read its table and
	// before it returns: what another writer does between a sync's
	// listing and its restore.
	AfterSave func(table string)
}

var _ Runner = (*Fake)(nil)

type fakeTable struct {
	name   string
	chains map[string]*fakeChain
}

type fakeChain struct {
	builtin bool
	policy  string // built-in chains only
	rules   []fakeRule
}

type fakeRule struct {
	text   string // normalized rule, without "-A chain"
	target string // the -j or -g target, "" when none
}

// fakeTableNames are the tables a Fake has, in Dump order.
var fakeTableNames = []string{"filter", "mangle", "nat", "raw"}

// fakeBuiltins are each table's built-in chains, in iptables-save order.
var fakeBuiltins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

// fakeTargets are the targets a rule may name that are not chains.
var fakeTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "REJECT": true,
	"DNAT": true, "SNAT": true, "MASQUERADE": true, "REDIRECT": true,
	"MARK": true, "CONNMARK": true, "LOG": true, "NOTRACK": true, "CT": true,
}

// fakeTargetTables are the tables the kernel allows some targets in.
var fakeTargetTables = map[string]string{
	"REJECT": "filter", "DNAT": "nat", "SNAT": "nat", "MASQUERADE": "nat", "REDIRECT": "nat",
	"NOTRACK": "raw", "CT": "raw",
}

// maxChainName is the longest chain name iptables accepts.
const maxChainName = 28

// errFakeRestore is the Err of the *RestoreError a Fake's Restore returns
// when the script is wrong.
var errFakeRestore = errors.New("fake iptables-restore failed")

// NewFake returns a Fake with empty built-in chains whose policy is ACCEPT.
func NewFake() *Fake {
	f := &Fake{tables: map[string]*fakeTable{}}
	for _, name := range fakeTableNames {
		t := &fakeTable{name: name, chains: map[string]*fakeChain{}}
		for _, ch := range fakeBuiltins[name] {
			t.chains[ch] = &fakeChain{builtin: true, policy: "ACCEPT"}
		}
		f.tables[name] = t
	}
	return f
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{name: t.name, chains: make(map[string]*fakeChain, len(t.chains))}
	for name, ch := range t.chains {
		cc := *ch
		cc.rules = slices.Clone(ch.rules)
		c.chains[name] = &cc
	}
	return c
}

// Restore implements Runner: it applies an iptables-restore --noflush
// script to a copy of the tables and keeps the copy only if every line
// succeeded. Errors are *RestoreError whose Output names the line.
func (f *Fake) Restore(_ context.Context, script []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Restores++
	f.LastScript = bytes.Clone(script)
	if err := f.FailNext; err != nil {
		f.FailNext = nil
		return err
	}
	work := make(map[string]*fakeTable, len(f.tables))
	for name, t := range f.tables {
		work[name] = t.clone()
	}
	if n, err := restoreInto(work, script, f.Unsupported); err != nil {
		return &RestoreError{Output: fmt.Sprintf("line %d: %v", n, err), Err: errFakeRestore, Script: bytes.Clone(script)}
	}
	f.tables = work
	return nil
}

// restoreInto applies script to tables, and on error returns the number of
// the line at fault.
func restoreInto(tables map[string]*fakeTable, script []byte, unsupported map[string]bool) (int, error) {
	var (
		cur     *fakeTable
		curName string
		started int // line of the current *table
	)
	lines := strings.Split(string(script), "\n")
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		switch {
		case line[0] == '*':
			if cur != nil {
				return n, fmt.Errorf("table %q started before table %q (line %d) was committed", line[1:], curName, started)
			}
			curName, started = line[1:], n
			if cur = tables[curName]; cur == nil {
				return n, fmt.Errorf("unknown table %q", curName)
			}
		case line == "COMMIT":
			if cur == nil {
				return n, errors.New("COMMIT outside a table")
			}
			cur = nil
		case cur == nil:
			return n, fmt.Errorf("%q outside a table", line)
		case line[0] == ':':
			if err := cur.declare(line[1:]); err != nil {
				return n, err
			}
		default:
			toks, err := splitRule(line)
			if err != nil {
				return n, err
			}
			for i, tok := range toks {
				if (tok == "-m" || tok == "--match") && i+1 < len(toks) && unsupported[toks[i+1]] {
					return n, fmt.Errorf("couldn't load match %q: no such file or directory", toks[i+1])
				}
			}
			if err := cur.command(toks); err != nil {
				return n, err
			}
		}
	}
	if cur != nil {
		return len(lines), fmt.Errorf("COMMIT expected for table %q (line %d)", curName, started)
	}
	return 0, nil
}

// declare handles ":CHAIN POLICY [packets:bytes]": it creates or flushes a
// user chain, and sets the policy of a built-in chain without touching its
// rules.
func (t *fakeTable) declare(decl string) error {
	f := strings.Fields(decl)
	if len(f) < 2 || len(f) > 3 {
		return fmt.Errorf("bad chain declaration %q: want \":CHAIN POLICY [0:0]\"", ":"+decl)
	}
	name, policy := f[0], f[1]
	ch := t.chains[name]
	switch {
	case ch != nil && ch.builtin:
		if policy != "-" {
			if policy != "ACCEPT" && policy != "DROP" {
				return fmt.Errorf("bad policy %q for built-in chain %s", policy, name)
			}
			ch.policy = policy
		}
	case policy != "-":
		return fmt.Errorf("cannot set policy %q on user chain %s", policy, name)
	case ch != nil:
		ch.rules = nil
	default:
		if err := checkChainName(name); err != nil {
			return err
		}
		t.chains[name] = &fakeChain{}
	}
	return nil
}

func checkChainName(name string) error {
	switch {
	case name == "" || strings.HasPrefix(name, "-") || name == "!":
		return fmt.Errorf("invalid chain name %q", name)
	case len(name) > maxChainName:
		return fmt.Errorf("chain name %q is %d characters, more than %d", name, len(name), maxChainName)
	case fakeTargets[name]:
		return fmt.Errorf("chain name %q is a target name", name)
	}
	return nil
}

// command handles -A, -I, -D, -N, -F and -X.
func (t *fakeTable) command(toks []string) error {
	cmd := toks[0]
	if len(toks) < 2 {
		return fmt.Errorf("%s needs a chain", cmd)
	}
	name := toks[1]
	ch := t.chains[name]
	rest := toks[2:]
	if cmd != "-N" && ch == nil {
		return fmt.Errorf("%s %s: no chain by that name", cmd, name)
	}
	switch cmd {
	case "-A":
		r, err := t.rule(rest)
		if err != nil {
			return err
		}
		ch.rules = append(ch.rules, r)
	case "-I":
		pos := 1
		if len(rest) > 0 {
			if n, err := strconv.Atoi(rest[0]); err == nil {
				if n < 1 || n > len(ch.rules)+1 {
					return fmt.Errorf("-I %s %d: index out of range (chain has %d rules)", name, n, len(ch.rules))
				}
				pos, rest = n, rest[1:]
			}
		}
		r, err := t.rule(rest)
		if err != nil {
			return err
		}
		ch.rules = slices.Insert(ch.rules, pos-1, r)
	case "-D":
		if len(rest) == 1 {
			if n, err := strconv.Atoi(rest[0]); err == nil {
				if n < 1 || n > len(ch.rules) {
					return fmt.Errorf("-D %s %d: index out of range (chain has %d rules)", name, n, len(ch.rules))
				}
				ch.rules = slices.Delete(ch.rules, n-1, n)
				return nil
			}
		}
		text := joinRule(rest)
		i := slices.IndexFunc(ch.rules, func(r fakeRule) bool { return r.text == text })
		if i < 0 {
			return fmt.Errorf("-D %s %s: no such rule in the chain", name, text)
		}
		ch.rules = slices.Delete(ch.rules, i, i+1)
	case "-N":
		if len(rest) > 0 {
			return fmt.Errorf("-N %s: unexpected %q", name, joinRule(rest))
		}
		if ch != nil {
			return fmt.Errorf("-N %s: chain already exists", name)
		}
		if err := checkChainName(name); err != nil {
			return err
		}
		t.chains[name] = &fakeChain{}
	case "-F":
		if len(rest) > 0 {
			return fmt.Errorf("-F %s: unexpected %q", name, joinRule(rest))
		}
		ch.rules = nil
	case "-X":
		if len(rest) > 0 {
			return fmt.Errorf("-X %s: unexpected %q", name, joinRule(rest))
		}
		switch {
		case ch.builtin:
			return fmt.Errorf("-X %s: cannot delete a built-in chain", name)
		case len(ch.rules) > 0:
			return fmt.Errorf("-X %s: chain is not empty (%d rules)", name, len(ch.rules))
		}
		if from := t.referrer(name); from != "" {
			return fmt.Errorf("-X %s: chain is referenced by a rule in %s", name, from)
		}
		delete(t.chains, name)
	default:
		return fmt.Errorf("unsupported command %q", cmd)
	}
	return nil
}

// rule normalizes a rule and checks its target exists, and its comment
// fits.
func (t *fakeTable) rule(toks []string) (fakeRule, error) {
	r := fakeRule{text: joinRule(toks)}
	for i, tok := range toks {
		// iptables before 1.8.9 refuses a longer comment; 1.8.9 keeps
		// its first 255 bytes, so that it no longer says what we wrote.
		if tok == "--comment" && i+1 < len(toks) && len(toks[i+1]) > MaxComment {
			return r, fmt.Errorf("--comment of %d bytes: the kernel keeps %d", len(toks[i+1]), MaxComment)
		}
	}
	for i, tok := range toks {
		if tok != "-j" && tok != "-g" && tok != "--jump" && tok != "--goto" || i > 0 && toks[i-1] == "--comment" {
			continue
		}
		if i+1 >= len(toks) {
			return r, fmt.Errorf("%s without a target", tok)
		}
		if r.target != "" {
			return r, fmt.Errorf("rule has more than one target: %s", r.text)
		}
		r.target = toks[i+1]
		if fakeTargets[r.target] {
			if want := fakeTargetTables[r.target]; want != "" && want != t.name {
				return r, fmt.Errorf("%s %s: the kernel accepts it only in table %s", tok, r.target, want)
			}
			continue
		}
		ch := t.chains[r.target]
		switch {
		case ch == nil:
			return r, fmt.Errorf("%s %s: no chain or target by that name", tok, r.target)
		case ch.builtin:
			return r, fmt.Errorf("%s %s: cannot jump to a built-in chain", tok, r.target)
		}
	}
	return r, nil
}

// referrer returns the name of a chain with a rule that jumps to name, or "".
func (t *fakeTable) referrer(name string) string {
	for _, from := range t.chainNames() {
		for _, r := range t.chains[from].rules {
			if r.target == name {
				return from
			}
		}
	}
	return ""
}

// chainNames returns the built-in chains in iptables order, then the user
// chains sorted, as iptables-save lists them.
func (t *fakeTable) chainNames() []string {
	var builtin, user []string
	for name, ch := range t.chains {
		if ch.builtin {
			builtin = append(builtin, name)
		} else {
			user = append(user, name)
		}
	}
	order := map[string]int{"PREROUTING": 0, "INPUT": 1, "FORWARD": 2, "OUTPUT": 3, "POSTROUTING": 4}
	sort.Slice(builtin, func(i, j int) bool { return order[builtin[i]] < order[builtin[j]] })
	sort.Strings(user)
	return append(builtin, user...)
}

// Save implements Runner with iptables-save's format, without counters or
// timestamps, so that the output is deterministic.
func (f *Fake) Save(_ context.Context, table string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil {
		return nil, fmt.Errorf("iptables-save -t %s: table does not exist", table)
	}
	var b bytes.Buffer
	writeTable(&b, table, t)
	if f.AfterSave != nil {
		f.mu.Unlock()
		defer f.mu.Lock()
		f.AfterSave(table)
	}
	return b.Bytes(), nil
}

// Flush empties every chain of table and deletes those named prefix*, as
// a firewall reload does to the tables of iptables (firewalld 1.3's
// several times over one reload).
func (f *Fake) Flush(ctx context.Context, table, prefix string) error {
	script := "*" + table + "\n"
	chains := f.Chains(table)
	for _, ch := range chains {
		script += "-F " + ch + "\n"
	}
	for _, ch := range chains {
		if strings.HasPrefix(ch, prefix) {
			script += "-X " + ch + "\n"
		}
	}
	return f.Restore(ctx, []byte(script+"COMMIT\n"))
}

func writeTable(b *bytes.Buffer, name string, t *fakeTable) {
	fmt.Fprintf(b, "*%s\n", name)
	names := t.chainNames()
	for _, ch := range names {
		policy := "-"
		if c := t.chains[ch]; c.builtin {
			policy = c.policy
		}
		fmt.Fprintf(b, ":%s %s [0:0]\n", ch, policy)
	}
	for _, ch := range names {
		for _, r := range t.chains[ch].rules {
			fmt.Fprintf(b, "-A %s %s\n", ch, r.text)
		}
	}
	b.WriteString("COMMIT\n")
}

// ListChain implements Runner.
func (f *Fake) ListChain(_ context.Context, table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil || t.chains[chain] == nil {
		return nil, ErrNoChain
	}
	var out []string
	for _, r := range t.chains[chain].rules {
		out = append(out, "-A "+chain+" "+r.text)
	}
	return out, nil
}

// HasRandomFully implements Runner.
func (f *Fake) HasRandomFully() bool { return true }

// Dump returns every table in Save's format, tables in a fixed order: a
// deterministic text for golden-style comparisons.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	for _, name := range fakeTableNames {
		writeTable(&b, name, f.tables[name])
	}
	return b.String()
}

// Rules returns the normalized rules of a chain, nil if the chain does not
// exist.
func (f *Fake) Rules(table, chain string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil || t.chains[chain] == nil {
		return nil
	}
	out := []string{}
	for _, r := range t.chains[chain].rules {
		out = append(out, r.text)
	}
	return out
}

// Chains returns the chains of a table: built-in ones first, in iptables
// order, then user chains sorted.
func (f *Fake) Chains(table string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil {
		return nil
	}
	return t.chainNames()
}

// Policy returns the policy of a built-in chain, "" for another chain.
func (f *Fake) Policy(table, chain string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tables[table]; t != nil {
		if ch := t.chains[chain]; ch != nil && ch.builtin {
			return ch.policy
		}
	}
	return ""
}

// splitRule splits a line of iptables-restore input into arguments the way
// iptables-restore does: on blanks, except inside double quotes, where a
// backslash stands for the character after it (\" for ", \\ for \, and
// \n for n).
func splitRule(s string) ([]string, error) {
	var (
		out           []string
		b             strings.Builder
		inTok, quoted bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i++
		case c == '"':
			quoted, inTok = !quoted, true
		case !quoted && (c == ' ' || c == '\t' || c == '\r'):
			if inTok {
				out = append(out, b.String())
				b.Reset()
				inTok = false
			}
		default:
			b.WriteByte(c)
			inTok = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inTok {
		out = append(out, b.String())
	}
	return out, nil
}

// joinRule is the normalized text of a rule's arguments: one space between
// arguments, and double quotes around those that need them, as
// iptables-save prints them (--comment "a b", but --comment ab).
func joinRule(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = quoteArg(a)
	}
	return strings.Join(q, " ")
}

func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\r\"\\'") {
		return a
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(a) + `"`
}
