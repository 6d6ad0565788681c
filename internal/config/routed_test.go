package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestRoutedClients: routed_clients is a top-level list of CIDRs, empty by
// default; "anyone", multicast, host bits and repeats are refused with the
// line, every problem at once.
func TestRoutedClients(t *testing.T) {
	dir := testDir(t)
	parse := func(top ...string) (*Config, error) {
		l := append(top, `[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`)
		return Parse([]byte(lines(l...)), filepath.Join(dir, "config.toml"))
	}

	cfg, err := parse()
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	if cfg.RoutedClients != nil {
		t.Errorf("RoutedClients by default: %v, want none", cfg.RoutedClients)
	}
	if s := cfg.RoutedSummary(); !strings.Contains(s, "routed traffic is not served") {
		t.Errorf("summary without routed_clients: %q", s)
	}

	cfg, err = parse(`routed_clients = ["172.17.0.0/16", "10.251.1.2/32", "fd00:251::/48"]`)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("10.251.1.2/32"), netip.MustParsePrefix("fd00:251::/48")}
	if !reflect.DeepEqual(cfg.RoutedClients, want) {
		t.Errorf("RoutedClients: %v, want %v", cfg.RoutedClients, want)
	}
	if s := cfg.RoutedSummary(); !strings.Contains(s, "from 172.17.0.0/16, 10.251.1.2/32, fd00:251::/48") {
		t.Errorf("summary: %q", s)
	}

	_, err = parse(
		`mode = "iptables"`,
		`routed_clients = ["0.0.0.0/0", "::/0", "10.1.2.3/16", "172.17.0.0/16", "172.17.0.0/16", "224.0.0.0/4", "nonsense"]`,
	)
	gotProblems := problems(t, err)
	wantProblems := []string{
		`2: routed_clients[0] "0.0.0.0/0": every address: list the networks of the hosts that route through this one, like "172.17.0.0/16" for Docker's bridge`,
		`2: routed_clients[1] "::/0": every address: list the networks of the hosts that route through this one, like "172.17.0.0/16" for Docker's bridge`,
		`2: routed_clients[2] "10.1.2.3/16": not a network address (did you mean 10.1.0.0/16?)`,
		`2: routed_clients[4] "172.17.0.0/16": listed twice`,
		`2: routed_clients[5] "224.0.0.0/4": a multicast range is no source of connections`,
		`2: routed_clients[6] "nonsense": missing prefix length, like /12`,
	}
	if !reflect.DeepEqual(gotProblems, wantProblems) {
		t.Errorf("problems:\n got %q\nwant %q", gotProblems, wantProblems)
	}

	_, err = parse(`routed_clients = "172.17.0.0/16"`)
	if got := problems(t, err); len(got) != 1 || got[0] != `1: routed_clients: must be an array of strings, not a string` {
		t.Errorf("a string for a list: %q", got)
	}

	// A cluster key by mistake: the unknown-key hint points to the top.
	_, err = Parse([]byte(lines(`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`,
		`routed_clients = ["172.17.0.0/16"]`)), filepath.Join(dir, "config.toml"))
	if got := problems(t, err); len(got) != 1 || !strings.Contains(got[0], `5: unknown key "clusters[0].routed_clients" (top-level keys go before the first [[clusters]])`) {
		t.Errorf("routed_clients in a cluster: %q", got)
	}
}
