package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

// The modes a real binary has come from internal/proxy, which this
// package cannot import; these stand in for them. "limited" can do
// nothing a key asks for.
func init() {
	all := Capabilities{CanRoutedClients, CanNodePorts, CanExternalIPs, CanMasquerade, CanIPv6, CanReject, CanAffinity}
	RegisterMode("iptables", all)
	RegisterMode("ipvs", all)
	RegisterMode("limited", Capabilities{CanReject})
}

// TestModeCapabilities: a config that asks a mode for what it cannot do is
// refused, each problem naming the key, its line and the mode; the same
// config passes with a mode that can.
func TestModeCapabilities(t *testing.T) {
	dir := testDir(t)
	text := func(mode string) string {
		return lines(
			`mode = "`+mode+`"`,
			`masquerade = true`,
			`routed_clients = ["192.168.50.0/24"]`,
			`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`,
			`service_cidrs = ["10.96.0.0/16", "fd00:96::/112"]`,
			`serve_node_ports = true`,
			`allow_external_ips = ["198.51.100.0/24"]`,
		)
	}
	if _, err := Parse([]byte(text("iptables")), filepath.Join(dir, "config.toml")); err != nil {
		t.Fatalf("a mode that can do it all: %v", err)
	}
	_, err := Parse([]byte(text("limited")), filepath.Join(dir, "config.toml"))
	want := []string{
		`2: masquerade: mode "limited" cannot do masquerading`,
		`3: routed_clients: mode "limited" cannot do routed clients`,
		`7: cluster "a": service_cidrs: mode "limited" cannot do IPv6 services`,
		`8: cluster "a": serve_node_ports: mode "limited" cannot do node ports`,
		`9: cluster "a": allow_external_ips: mode "limited" cannot do external IPs`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}
