package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDNSConfigGolden: the whole output for testdata/dns.toml. After a
// change meant to alter it, write it again with
//
//	go run ./cmd/kube-outpost dns-config --config cmd/kube-outpost/testdata/dns.toml > cmd/kube-outpost/testdata/dns-config.golden
//
// and read the diff.
func TestDNSConfigGolden(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "dns-config.golden"))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"dns-config", "--config", filepath.Join("testdata", "dns.toml")}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := stdout.String(); got != string(want) {
		t.Errorf("output differs from testdata/dns-config.golden:\n%s", got)
	}
}

func TestDNSConfigCommand(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "prod.kubeconfig", kubeconfig)
	cluster := "[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\nservice_cidrs = [\"10.96.0.0/12\"]\n"
	noDNS := write(t, dir, "nodns.toml", cluster)
	plain := write(t, dir, "plain.toml", "[dns]\n"+cluster)
	wildcard := write(t, dir, "wildcard.toml", "routed_clients = [\"172.17.0.0/16\"]\n[dns]\nlisten = [\"0.0.0.0:53\"]\n"+cluster)
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		not    []string
		stderr string
	}{
		{name: "no [dns]", args: []string{"dns-config", "--config", noDNS}, code: 1, stderr: "nodns.toml: no [dns] table"},
		{name: "missing file", args: []string{"dns-config", "--config", filepath.Join(dir, "nope.toml")}, code: 1, stderr: "nope.toml"},
		{name: "unknown resolver", args: []string{"dns-config", "--config", plain, "--resolver", "djbdns"}, code: 2,
			stderr: `--resolver "djbdns": want one of systemd-resolved, dnsmasq, unbound, bind, routed`},
		{name: "argument", args: []string{"dns-config", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		// A /12 is sixteen reverse zones, never 10.in-addr.arpa, whose
		// other names the server refuses.
		{name: "a /12", args: []string{"dns-config", "--config", plain, "--resolver", "dnsmasq"}, code: 0,
			stdout: []string{"server=/prod.internal/127.0.0.153#53\n", "server=/96.10.in-addr.arpa/127.0.0.153#53\n",
				"server=/111.10.in-addr.arpa/127.0.0.153#53\n", "rebind-domain-ok=/prod.internal/\n"},
			not: []string{"/10.in-addr.arpa/", "112.10.in-addr.arpa", "95.10.in-addr.arpa", "[Resolve]", "forward-zone:"}},
		{name: "unbound asks loopback", args: []string{"dns-config", "--config", plain, "--resolver", "unbound"}, code: 0,
			stdout: []string{"    do-not-query-localhost: no\n", "forward-zone:\n    name: \"prod.internal.\"\n    forward-addr: 127.0.0.153@53\n",
				"    local-zone: \"100.10.in-addr.arpa.\" transparent\n", "    private-domain: \"prod.internal\"\n"},
			not: []string{"private-domain: \"100.10.in-addr.arpa\""}},
		{name: "bind", args: []string{"dns-config", "--config", plain, "--resolver", "bind"}, code: 0,
			stdout: []string{`zone "prod.internal" { type forward; forward only; forwarders { 127.0.0.153 port 53; }; };`,
				`#   validate-except { "prod.internal"; "96.10.in-addr.arpa"; `},
			// Forward zones below BIND's automatic empty zones are used
			// as they are; turning 10.in-addr.arpa off would send its
			// other names to the Internet.
			not: []string{"disable-empty-zone"}},
		{name: "routed, loopback only", args: []string{"dns-config", "--config", plain, "--resolver", "routed"}, code: 0,
			stdout: []string{"Every listen address is loopback", "routed_clients is not set"}, not: []string{"server="}},
		// A wildcard is reached at loopback here, and at an address of
		// this host from a routed one.
		{name: "wildcard", args: []string{"dns-config", "--config", wildcard}, code: 0,
			stdout: []string{"DNS=127.0.0.1\n", "server=/prod.internal/127.0.0.1#53\n", "forward-addr: 127.0.0.1@53\n",
				"#   server=/prod.internal/ADDRESS-OF-THIS-HOST#53\n"},
			not: []string{"DNS=0.0.0.0", "/0.0.0.0#", "forward-addr: 0.0.0.0", "routed_clients is not set", "Every listen address is loopback"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(c.args, &stdout, &stderr); code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, stdout.String(), stderr.String())
			}
			for _, w := range c.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, n := range c.not {
				if strings.Contains(stdout.String(), n) {
					t.Errorf("stdout has %q:\n%s", n, stdout.String())
				}
			}
			if !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("stderr lacks %q:\n%s", c.stderr, stderr.String())
			}
			if c.code != 0 && stdout.Len() > 0 {
				t.Errorf("stdout on failure:\n%s", stdout.String())
			}
		})
	}
}

// The systemd-resolved snippet writes port 53 bare, which every version
// reads, and address:port otherwise, with the version that reads it.
func TestResolvedPorts(t *testing.T) {
	var b strings.Builder
	resolvedText(&b, dnsTargets{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.153:53"), netip.MustParseAddrPort("[fd00::53]:5353")},
		Clusters: []dnsCluster{{Name: "prod", Zones: []string{"prod.internal"}}}})
	for _, w := range []string{"DNS=127.0.0.153 [fd00::53]:5353\n", "Domains=~prod.internal\n", "since systemd 246"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("lacks %q:\n%s", w, b.String())
		}
	}
	b.Reset()
	resolvedText(&b, dnsTargets{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.153:53")}})
	if strings.Contains(b.String(), "systemd 246") {
		t.Errorf("a version note with port 53 only:\n%s", b.String())
	}
}
