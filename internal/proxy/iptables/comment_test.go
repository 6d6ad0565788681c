package iptables

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Names at the longest Kubernetes and our config allow: a cluster name of
// 40 characters (config), a namespace (DNS-1123 label) and a service name
// (DNS-1035 label) of 63, a port name (IANA service name) of 15.
var (
	maxCluster = "c" + strings.Repeat("0123456789", 3) + "abcdefghi"
	maxNS      = strings.Repeat("n", 62) + "s"
	maxName    = strings.Repeat("s", 62) + "n"
	maxPort    = "port-1234567890"
)

func TestCommentText(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes, two per rune
	for _, tt := range []struct {
		name, in, want string
	}{
		{"plain", "prod/default/web:http", "prod/default/web:http"},
		{"quotes and backslashes stay", `a "b" \c`, `a "b" \c`},
		{"printable Unicode stays", "café/日本", "café/日本"},
		{"controls", "a\nb\rc\x1b[2Jd\x00e\x7f", "a?b?c?[2Jd?e?"},
		{"C1, bidi, zero width", "x\u009by\u202ez\u200d", "x?y?z?"},
		{"not UTF-8", "a\xffb\xe2\x80", "a?b??"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := commentText(tt.in); got != tt.want {
				t.Errorf("commentText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}

	// Cut: at most MaxComment bytes, on a rune boundary, with a hash of
	// the whole; two texts that differ only after the cut stay apart.
	a, b := commentText(long+"a"), commentText(long+"b")
	if len(a) > MaxComment || !utf8.ValidString(a) || !strings.HasPrefix(a, strings.Repeat("é", 100)) ||
		!regexp.MustCompile(`^(é)+\.\.\.[A-Z2-7]{8}$`).MatchString(a) {
		t.Errorf("cut comment %q (%d bytes)", a, len(a))
	}
	if a == b {
		t.Errorf("two long texts make one comment %q", a)
	}
	if c := commentText(strings.Repeat("x", MaxComment)); c != strings.Repeat("x", MaxComment) {
		t.Errorf("a text of exactly %d bytes was changed: %q", MaxComment, c)
	}
}

// TestCommentThroughRestore: what iptables-restore (the Fake splits as it
// does) reads from Comment is the text, whatever the name held.
func TestCommentThroughRestore(t *testing.T) {
	for _, in := range []string{
		"prod/default/web:http", `say "hi" \o/`, "a\nb\x1b]0;x\x07", "\u202eevil", strings.Repeat("\"\\", 300),
		strings.Repeat("日本", 100),
	} {
		f := NewFake()
		script := fmt.Sprintf("*filter\n:T - [0:0]\n-A T %s -j ACCEPT\nCOMMIT\n", Comment(in))
		if err := f.Restore(t.Context(), []byte(script)); err != nil {
			t.Errorf("Comment(%q): %v", in, err)
			continue
		}
		toks, err := splitRule(f.Rules("filter", "T")[0])
		if err != nil || len(toks) != 6 || toks[3] != commentText(in) || len(toks[3]) > MaxComment {
			t.Errorf("Comment(%q) reads back as %q (%v), want %q", in, toks, err, commentText(in))
		}
	}
}

func TestFakeRefusesLongComment(t *testing.T) {
	f := NewFake()
	script := fmt.Sprintf("*filter\n:T - [0:0]\n-A T -m comment --comment %q -j ACCEPT\nCOMMIT\n", strings.Repeat("x", MaxComment+1))
	if err := f.Restore(t.Context(), []byte(script)); err == nil || !strings.Contains(err.Error(), "--comment of 256 bytes") {
		t.Errorf("a 256-byte comment restored: %v", err)
	}
}

// TestLongNamesDoNotBreakTheRestore syncs a cluster whose names are as
// long as Kubernetes allows, and one whose apiserver sends names no
// apiserver would accept (too long, with newlines and quotes), next to an
// honest cluster: every rule restores (the Fake refuses comments the kernel
// would not keep), comments stay apart, and every cluster's services work.
func TestLongNamesDoNotBreakTheRestore(t *testing.T) {
	hostile := strings.Repeat("x", 300) + "\n-A OUTPUT -j DROP\n\"" + strings.Repeat("é", 100)
	withNodePort := func(sp *model.ServicePort, np uint16) *model.ServicePort {
		sp.NodePort, sp.ServedNodePort = np, np
		return sp
	}
	withExt := func(sp *model.ServicePort, ip string) *model.ServicePort {
		sp.ExternalIPs = []netip.Addr{netip.MustParseAddr(ip)}
		return sp
	}
	long := cluster(maxCluster, true, []string{"10.98.0.0/16", "fd00:98::/112"},
		withExt(withNodePort(svc(maxCluster, maxNS, maxName, maxPort, model.SCTP, "10.98.0.10", 80, "10.2.0.1:8080"), 30080), "203.0.113.10"),
		withExt(withNodePort(svc(maxCluster, maxNS, maxName, maxPort, model.SCTP, "fd00:98::10", 80, "[fd00:4::1]:8080"), 30080), "2001:db8::10"),
		withExt(withNodePort(svc(maxCluster, maxNS, maxName+"x", maxPort, model.UDP, "10.98.0.11", 81), 30081), "203.0.113.11"),
	)
	rogue := cluster("rogue", true, []string{"10.99.0.0/16"},
		withExt(withNodePort(svc("rogue", hostile, hostile+"1", hostile, model.UDP, "10.99.0.10", 53, "10.3.0.1:53"), 30053), "203.0.113.20"),
		withExt(withNodePort(svc("rogue", hostile, hostile+"2", hostile, model.UDP, "10.99.0.11", 53), 30054), "203.0.113.21"),
	)
	for _, c := range []*model.ClusterState{long, rogue} {
		c.ServeNodePorts = true
		c.AllowExternalIPs = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/64")}
	}
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			st := testState()
			st.Clusters = append(st.Clusters, long, rogue)
			f := NewFake()
			p := newProxier(f, v6, testMark)
			mustSync(t, p, st, true)
			mustSync(t, p, st, false)

			seen := map[string]string{}
			n := 0
			for _, table := range []string{"nat", "filter"} {
				for _, ch := range f.Chains(table) {
					for _, r := range f.Rules(table, ch) {
						toks, err := splitRule(r)
						if err != nil {
							t.Fatal(err)
						}
						for i, tok := range toks {
							if tok != "--comment" {
								continue
							}
							c := toks[i+1]
							n++
							if len(c) > MaxComment || !utf8.ValidString(c) || strings.ContainsAny(c, "\n\r") {
								t.Errorf("comment %q (%d bytes)", c, len(c))
							}
							if other, dup := seen[c]; dup && other != ch && strings.HasPrefix(ch, servicePrefix) {
								t.Errorf("comment %q in %s and %s", c, other, ch)
							}
							seen[c] = ch
						}
					}
				}
			}
			if n == 0 {
				t.Fatal("no comments read back")
			}
			if v6 {
				checkFlow(t, f, sctp("fd00:98::10", 80), shares(true, "[fd00:4::1]:8080"))
				checkFlow(t, f, tcp("fd00:96::10", 80), shares(true, "[fd00:1::1]:8080", "[fd00:1::2]:8080", "[fd00:1::3]:8080"))
				return
			}
			checkFlow(t, f, sctp("10.98.0.10", 80), shares(true, "10.2.0.1:8080"))
			checkFlow(t, f, sctp("203.0.113.10", 80), shares(true, "10.2.0.1:8080"))
			checkFlow(t, f, udp("10.98.0.11", 81), rejected("icmp-port-unreachable"))
			checkFlow(t, f, udp("10.99.0.10", 53), shares(true, "10.3.0.1:53"))
			checkFlow(t, f, udp("10.99.0.11", 53), rejected("icmp-port-unreachable"))
			checkFlow(t, f, tcp("10.96.0.10", 80), shares(true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"))
			checkFlow(t, f, tcp("10.97.0.10", 443), shares(true, "10.1.0.1:6443", "10.1.0.2:6443"))
		})
	}
}
