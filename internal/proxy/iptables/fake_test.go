package iptables

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func mustRestore(t *testing.T, f *Fake, script string) {
	t.Helper()
	if err := f.Restore(t.Context(), []byte(script)); err != nil {
		t.Fatalf("Restore: %v\nscript:\n%s", err, script)
	}
}

func TestFakeRestoreAndDump(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, `# a comment
*nat
:B - [0:0]
:A - [0:0]
:OUTPUT ACCEPT [12:345]
-A A -d 10.0.0.1/32   -p tcp -m tcp --dport 80 -m comment --comment "a  b" -j DNAT --to-destination 10.1.0.1:80
-A B -m comment --comment "simple" -j A
-A OUTPUT -j B
-I OUTPUT -j RETURN
-I OUTPUT 2 -m comment --comment "in the middle" -j ACCEPT
COMMIT
*filter
:FORWARD DROP [0:0]
-N C
-A C -j REJECT --reject-with "icmp-port-unreachable"
-A FORWARD -j C
COMMIT
`)
	want := `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:C - [0:0]
-A FORWARD -j C
-A C -j REJECT --reject-with icmp-port-unreachable
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
-A OUTPUT -j RETURN
-A OUTPUT -m comment --comment "in the middle" -j ACCEPT
-A OUTPUT -j B
-A A -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment "a  b" -j DNAT --to-destination 10.1.0.1:80
-A B -m comment --comment simple -j A
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`
	if got := f.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s\ndiff (- got, + want):\n%s", got, want, lineDiff(got, want))
	}
	if got, want := f.Chains("nat"), []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "A", "B"}; !slices.Equal(got, want) {
		t.Errorf("Chains(nat) = %q, want %q", got, want)
	}
	if got := f.Rules("nat", "B"); !slices.Equal(got, []string{"-m comment --comment simple -j A"}) {
		t.Errorf("Rules(nat, B) = %q", got)
	}
	if got := f.Rules("nat", "NOPE"); got != nil {
		t.Errorf("Rules of a missing chain = %q, want nil", got)
	}
	if got := f.Rules("nat", "INPUT"); got == nil || len(got) != 0 {
		t.Errorf("Rules of an empty chain = %#v, want empty, not nil", got)
	}
	if f.Restores != 1 || !strings.HasPrefix(string(f.LastScript), "# a comment") {
		t.Errorf("Restores = %d, LastScript = %.20q", f.Restores, f.LastScript)
	}
}

func TestFakeDeclareFlushesOnlyUserChains(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, "*nat\n:X - [0:0]\n-A X -j RETURN\n-A OUTPUT -j X\nCOMMIT\n")
	mustRestore(t, f, "*nat\n:X - [0:0]\n:OUTPUT ACCEPT [0:0]\n-A X -j ACCEPT\nCOMMIT\n")
	if got := f.Rules("nat", "X"); !slices.Equal(got, []string{"-j ACCEPT"}) {
		t.Errorf("user chain after redeclaring: %q, want it flushed then refilled", got)
	}
	if got := f.Rules("nat", "OUTPUT"); !slices.Equal(got, []string{"-j X"}) {
		t.Errorf("built-in chain after redeclaring: %q, want its rules kept", got)
	}
	mustRestore(t, f, "*nat\n:OUTPUT DROP [0:0]\nCOMMIT\n")
	if got := f.Policy("nat", "OUTPUT"); got != "DROP" {
		t.Errorf("policy = %q", got)
	}
}

func TestFakeDelete(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, `*filter
:X - [0:0]
-A X -m comment --comment "two words" -j ACCEPT
-A X -j DROP
-A X -j RETURN
COMMIT
`)
	// Whitespace and quoting are normalized before comparing.
	mustRestore(t, f, "*filter\n-D X  -m comment --comment \"two words\"   -j ACCEPT\n-D X 2\nCOMMIT\n")
	if got := f.Rules("filter", "X"); !slices.Equal(got, []string{"-j DROP"}) {
		t.Errorf("after deletes: %q", got)
	}
}

func TestFakeRestoreErrors(t *testing.T) {
	base := `*nat
:USED - [0:0]
:FULL - [0:0]
:EMPTY - [0:0]
-A FULL -j RETURN
-A OUTPUT -j USED
COMMIT
`
	for _, c := range []struct {
		name, script, want string
	}{
		{"unknown table", "*security\nCOMMIT\n", "line 1: unknown table"},
		{"no COMMIT", "*nat\n-A FULL -j ACCEPT\n", `COMMIT expected for table "nat"`},
		{"table in table", "*nat\n*filter\nCOMMIT\n", "line 2: table \"filter\" started before"},
		{"rule outside a table", "-A OUTPUT -j ACCEPT\n", "line 1: \"-A OUTPUT -j ACCEPT\" outside a table"},
		{"COMMIT outside a table", "COMMIT\n", "line 1: COMMIT outside"},
		{"append to missing chain", "*nat\n\n-A NOPE -j ACCEPT\nCOMMIT\n", "line 3: -A NOPE: no chain"},
		{"jump to missing chain", "*nat\n-A OUTPUT -j NOPE\nCOMMIT\n", "line 2: -j NOPE: no chain or target"},
		{"jump to built-in chain", "*nat\n-A FULL -j OUTPUT\nCOMMIT\n", "cannot jump to a built-in chain"},
		{"delete missing rule", "*nat\n-D FULL -j ACCEPT\nCOMMIT\n", "line 2: -D FULL -j ACCEPT: no such rule"},
		{"delete rule number out of range", "*nat\n-D FULL 2\nCOMMIT\n", "index out of range"},
		{"insert out of range", "*nat\n-I FULL 3 -j ACCEPT\nCOMMIT\n", "index out of range"},
		{"-X missing chain", "*nat\n-X NOPE\nCOMMIT\n", "line 2: -X NOPE: no chain"},
		{"-X built-in chain", "*nat\n-X OUTPUT\nCOMMIT\n", "cannot delete a built-in chain"},
		{"-X non-empty chain", "*nat\n-X FULL\nCOMMIT\n", "chain is not empty"},
		{"-X referenced chain", "*nat\n-X USED\nCOMMIT\n", "referenced by a rule in OUTPUT"},
		{"-N existing chain", "*nat\n-N EMPTY\nCOMMIT\n", "already exists"},
		{"chain name too long", "*nat\n:" + strings.Repeat("X", 29) + " - [0:0]\nCOMMIT\n", "more than 28"},
		{"policy on user chain", "*nat\n:EMPTY ACCEPT [0:0]\nCOMMIT\n", "cannot set policy"},
		{"bad policy", "*nat\n:OUTPUT REJECT [0:0]\nCOMMIT\n", "bad policy"},
		{"unterminated quote", "*nat\n-A FULL -m comment --comment \"x -j ACCEPT\nCOMMIT\n", "unterminated quote"},
		{"unknown command", "*nat\n-P OUTPUT DROP\nCOMMIT\n", "unsupported command"},
		{"two targets", "*nat\n-A FULL -j ACCEPT -j DROP\nCOMMIT\n", "more than one target"},
		{"REJECT in nat", "*nat\n-A FULL -j REJECT\nCOMMIT\n", "only in table filter"},
		{"DNAT in filter", "*filter\n-A OUTPUT -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n", "only in table nat"},
		// The failure is in the second table: the first must not stay
		// applied either.
		{"second table fails", "*filter\n:NEW - [0:0]\n-A OUTPUT -j NEW\nCOMMIT\n*nat\n-X EMPTY\n-X USED\nCOMMIT\n", "line 7: -X USED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := NewFake()
			mustRestore(t, f, base)
			before := f.Dump()
			err := f.Restore(t.Context(), []byte(c.script))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Restore:\n%s\ngot error %v, want one containing %q", c.script, err, c.want)
			}
			var re *RestoreError
			if !errors.As(err, &re) {
				t.Errorf("error is %T, want *RestoreError", err)
			}
			if got := f.Dump(); got != before {
				t.Errorf("a failed Restore changed the tables:\n%s", lineDiff(got, before))
			}
			if f.Restores != 2 || string(f.LastScript) != c.script {
				t.Errorf("Restores = %d, LastScript = %q", f.Restores, f.LastScript)
			}
		})
	}
}

func TestFakeRestoreErrorQuotesTheLine(t *testing.T) {
	f := NewFake()
	err := f.Restore(t.Context(), []byte("*nat\n-A OUTPUT -j NOPE\nCOMMIT\n"))
	if err == nil || !strings.Contains(err.Error(), `(line 2: "-A OUTPUT -j NOPE")`) {
		t.Errorf("got %v, want the failing line quoted", err)
	}
}

func TestFakeFailNext(t *testing.T) {
	f := NewFake()
	boom := errors.New("boom")
	f.FailNext = boom
	if err := f.Restore(t.Context(), []byte("*nat\n:X - [0:0]\nCOMMIT\n")); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if slices.Contains(f.Chains("nat"), "X") {
		t.Error("a failed Restore applied its script")
	}
	mustRestore(t, f, "*nat\n:X - [0:0]\nCOMMIT\n")
	if !slices.Contains(f.Chains("nat"), "X") || f.Restores != 2 {
		t.Errorf("FailNext was not cleared: chains %q, %d restores", f.Chains("nat"), f.Restores)
	}
}

func TestFakeSaveRoundTrip(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, foreignRules)
	mustSync(t, newProxier(f, false, testMark), testState(), true)

	g := NewFake()
	for _, table := range fakeTableNames {
		data, err := f.Save(t.Context(), table)
		if err != nil {
			t.Fatal(err)
		}
		mustRestore(t, g, string(data))
	}
	if a, b := f.Dump(), g.Dump(); a != b {
		t.Errorf("restoring Save's output gives other tables:\n%s", lineDiff(b, a))
	}

	data, _ := f.Save(t.Context(), "nat")
	got := ourChains(data)
	var want []string
	for _, ch := range f.Chains("nat") {
		if strings.HasPrefix(ch, chainPrefix) {
			want = append(want, ch)
		}
	}
	if len(want) < 5 || !slices.Equal(got, want) {
		t.Errorf("ourChains(Save) = %q, want %q", got, want)
	}
	if _, err := f.Save(t.Context(), "security"); err == nil {
		t.Error("Save of a missing table: no error")
	}
}

func TestSplitAndJoinRule(t *testing.T) {
	for _, c := range []struct {
		in   string
		toks []string
		text string
	}{
		{`-j ACCEPT`, []string{"-j", "ACCEPT"}, `-j ACCEPT`},
		{"  -d  1.2.3.4/32\t-j  ACCEPT ", []string{"-d", "1.2.3.4/32", "-j", "ACCEPT"}, `-d 1.2.3.4/32 -j ACCEPT`},
		{`--comment "a b"`, []string{"--comment", "a b"}, `--comment "a b"`},
		{`--comment "ab"`, []string{"--comment", "ab"}, `--comment ab`},
		{`--comment ""`, []string{"--comment", ""}, `--comment ""`},
		{`--comment "say \"hi\" \\o/"`, []string{"--comment", `say "hi" \o/`}, `--comment "say \"hi\" \\o/"`},
		{`--comment a"b c"d`, []string{"--comment", "ab cd"}, `--comment "ab cd"`},
	} {
		toks, err := splitRule(c.in)
		if err != nil || !slices.Equal(toks, c.toks) {
			t.Errorf("splitRule(%q) = %q, %v; want %q", c.in, toks, err, c.toks)
			continue
		}
		if got := joinRule(toks); got != c.text {
			t.Errorf("joinRule(%q) = %q, want %q", toks, got, c.text)
		}
		// Normalized text splits back to the same arguments.
		if again, _ := splitRule(c.text); !slices.Equal(again, c.toks) {
			t.Errorf("splitRule(%q) = %q, want %q", c.text, again, c.toks)
		}
	}
}

func TestFakeUnsupportedMatch(t *testing.T) {
	f := NewFake()
	f.Unsupported = map[string]bool{"sctp": true}
	err := f.Restore(t.Context(), []byte("*nat\n:X - [0:0]\n-A X -p sctp -m sctp --dport 1 -j RETURN\nCOMMIT\n"))
	if err == nil || !strings.Contains(err.Error(), `line 3: couldn't load match "sctp"`) {
		t.Errorf("got %v, want the sctp match refused on line 3", err)
	}
	mustRestore(t, f, "*nat\n:X - [0:0]\n-A X -p sctp -j RETURN\n-A X -p tcp -m tcp --dport 1 -j RETURN\nCOMMIT\n")
}
