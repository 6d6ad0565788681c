package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostile is what a cluster admin writes into a name, an address or an
// error text to take over the operator's terminal: a screen clear, a
// carriage return and a newline that forge a line, an OSC title, a C1 CSI,
// DEL, a right-to-left override, a zero-width joiner, a line separator, a
// tag character and a byte that is not UTF-8.
const hostile = "ns\x1b[2J\rFORGED\nFORGED line\x1b]0;owned\x07\u009b31m\x7f\u202egnp.exe\u200d\u2028\U000e0041\xff"

// hostileEscaped is hostile as the text output writes it.
const hostileEscaped = `ns\x1b[2J\x0dFORGED\x0aFORGED line\x1b]0;owned\x07\u009b31m\x7f\u202egnp.exe\u200d\u2028\U000e0041\xff`

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"default/web", "default/web"},
		{"prod/kube-system/dns:dns-tcp", "prod/kube-system/dns:dns-tcp"},
		// Printable Unicode stays: an operator reads names as they are.
		{"café/日本/ß", "café/日本/ß"},
		{"\t", `\x09`},
		{"a\x00b", `a\x00b`},
		{"\u00ad", `\u00ad`}, // soft hyphen: a format character
		{"\u2066x\u2069", `\u2066x\u2069`},
		{"\ufeff", `\ufeff`},
		{"\xe2\x80", `\xe2\x80`}, // a cut rune
		{"\ufffd", "\ufffd"},     // the replacement character itself is printable
		{hostile, hostileEscaped},
	} {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// fill sets every string of v (settable) to s, and makes every pointer
// and slice hold one element, so that no field of an answer is left out.
func fill(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), s)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), s)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), s)
			}
		}
	}
}

// checkTerminalSafe fails when out holds a character a terminal acts on,
// other than the output's own newlines, or when a line begins with what
// the hostile text forged.
func checkTerminalSafe(t *testing.T, what string, out []byte) {
	t.Helper()
	if !utf8.Valid(out) {
		t.Errorf("%s: not UTF-8:\n%s", what, out)
	}
	for i, r := range string(out) {
		if r != '\n' && unsafeRune(r) {
			t.Errorf("%s: raw %U at byte %d:\n%q", what, r, i, out)
			return
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "FORGED") {
			t.Errorf("%s: a forged line %q", what, l)
		}
	}
}

func TestReportHostileStrings(t *testing.T) {
	var r Report
	fill(reflect.ValueOf(&r).Elem(), hostile)
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "status", b.Bytes())
	// Mode, version, the sync error; per cluster its name twice, server,
	// reach, error, node types, node error, route problem, refusal...
	if n := strings.Count(b.String(), hostileEscaped); n < 15 {
		t.Errorf("the hostile text is shown escaped %d times, want every field:\n%s", n, b.String())
	}
	// The caller's report is not changed by rendering it.
	if r.Clusters[0].Name != hostile || r.Clusters[0].Refused[0].Reason != hostile {
		t.Errorf("rendering changed the report: %q", r.Clusters[0].Name)
	}
}

func TestExplanationHostileStrings(t *testing.T) {
	// The kernel's error, and what it holds: the renderer shows one.
	for _, tt := range []struct {
		name  string
		apply func(*KernelView)
	}{
		{"kernel error", func(*KernelView) {}},
		{"kernel view", func(k *KernelView) { k.Error = "" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ex Explanation
			fill(reflect.ValueOf(&ex).Elem(), hostile)
			ex.Ports[0].InModel = true
			tt.apply(&ex.Ports[0].Kernel)
			var b bytes.Buffer
			if err := testRenderer.explanation(&b, ex); err != nil {
				t.Fatal(err)
			}
			checkTerminalSafe(t, "explain", b.Bytes())
			if n := strings.Count(b.String(), `\x1b[2J`); n < 10 {
				t.Errorf("the hostile text is shown %d times:\n%s", n, b.String())
			}
		})
	}
}

// TestJSONHostileStrings: --output json escapes what encoding/json leaves
// raw, and a script still reads the same values.
func TestJSONHostileStrings(t *testing.T) {
	var r Report
	fill(reflect.ValueOf(&r).Elem(), hostile)
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "json", b.Bytes())
	for _, want := range []string{`\u001b[2J\rFORGED\nFORGED`, `\u009b31m\u007f\u202egnp.exe\u200d\u2028\udb40\udc41\ufffd`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("json output lacks %s:\n%s", want, b.String())
		}
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	// What encoding/json does itself: invalid UTF-8 becomes U+FFFD.
	want := strings.ToValidUTF8(hostile, "\ufffd")
	if back.Clusters[0].Refused[0].Reason != want || back.Clusters[0].Routes.Problems[0] != want {
		t.Errorf("read back %q, want %q", back.Clusters[0].Refused[0].Reason, want)
	}
}

func TestReportTextsBounded(t *testing.T) {
	long := strings.Repeat("x", 10*maxText) + "\x1b[2J"
	var r Report
	fill(reflect.ValueOf(&r).Elem(), long)
	r = r.boundTexts()
	c := r.Clusters[0]
	for name, s := range map[string]string{
		"last sync": r.LastSync.Error, "last success": r.LastSuccess.Error, "apiserver": c.LastError,
		"node watch": c.Nodes.LastError, "route refused": c.Routes.Refused[0], "route problem": c.Routes.Problems[0],
	} {
		if len(s) > maxText+30 || !strings.HasSuffix(s, fmt.Sprintf("… (%d more bytes)", len(long)-maxText)) {
			t.Errorf("%s: %d bytes, ends %q", name, len(s), s[max(0, len(s)-40):])
		}
	}

	// Rendered: every string, bounded or not, at most maxRendered.
	var b bytes.Buffer
	fill(reflect.ValueOf(&r).Elem(), long)
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(b.String(), "\n") {
		if len(l) > 3*maxRendered+200 { // a refusal's line holds three strings
			t.Errorf("a line of %d bytes", len(l))
		}
	}
}

func TestRefusalsBounded(t *testing.T) {
	s := fixtureStore(t)
	st := s.Snapshot()
	refusals := s.Refusals()
	refusals[0].Reason = strings.Repeat("endpoint 127.0.0.1 is a loopback address: dropped; ", 100)
	cs := ClusterFromModel(st.Clusters[0], refusals)
	if r := cs.Refused[0].Reason; len(r) > maxText+30 || !strings.Contains(r, "more bytes)") {
		t.Errorf("refusal of %d bytes in status: %q", len(r), r)
	}
}

func TestRefusedListCapped(t *testing.T) {
	c := ClusterStatus{Name: "rogue", Synced: true, Reachable: true}
	for i := range 3 * maxRefusedShown {
		c.Refused = append(c.Refused, Refusal{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), Reason: "spec.clusterIPs 1.2.3.4 is outside"})
	}
	var b bytes.Buffer
	if err := testRenderer.report(&b, Report{Clusters: []ClusterStatus{c}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if n := strings.Count(out, "ns/svc-"); n != maxRefusedShown {
		t.Errorf("%d refusals listed, want %d", n, maxRefusedShown)
	}
	if !strings.Contains(out, fmt.Sprintf("refused (%d):", 3*maxRefusedShown)) ||
		!strings.Contains(out, fmt.Sprintf("and %d more (kube-outpost status --output json lists them all)", 2*maxRefusedShown)) {
		t.Errorf("output:\n%s", out)
	}
}

// hostileSource answers every request with an error a cluster wrote.
type hostileSource struct{ fakeSource }

func (hostileSource) Explain(context.Context, Query) (Explanation, error) {
	return Explanation{}, errors.New(hostile + strings.Repeat("y", 2*maxText))
}

func TestServerErrorEscaped(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	serve(t, path, hostileSource{fakeSource{testReport}})
	_, err := Explain(t.Context(), path, mustQuery(t, "prod/default/web"))
	var se *ServerError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v", err)
	}
	checkTerminalSafe(t, "error", []byte(err.Error()))
	// The answer is JSON: the byte that is not UTF-8 came as U+FFFD.
	want := escape(strings.ToValidUTF8(hostile, "\ufffd"))
	if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), fmt.Sprintf("… (%d more bytes)", len(hostile)+2*maxText-maxText)) {
		t.Errorf("error %q", err.Error())
	}
}
