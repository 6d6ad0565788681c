package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestServeNodePorts: serve_node_ports is a cluster key taking a boolean,
// and it is refused with masquerade = false, naming both lines.
func TestServeNodePorts(t *testing.T) {
	dir := testDir(t)
	parse := func(toml string) (*Config, error) {
		return Parse([]byte(toml), filepath.Join(dir, "config.toml"))
	}
	cfg, err := parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `serve_node_ports = true`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`,
	))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	if !cfg.Clusters[0].ServeNodePorts || cfg.Clusters[1].ServeNodePorts {
		t.Errorf("ServeNodePorts: a %v, b %v; want true, false", cfg.Clusters[0].ServeNodePorts, cfg.Clusters[1].ServeNodePorts)
	}

	_, err = parse(lines(
		`masquerade = false`,
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `serve_node_ports = true`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`, `serve_node_ports = "yes"`,
		`[[clusters]]`, `name = "c"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.98.0.0/16"]`, `serve_node_ports = false`,
	))
	want := []string{
		`6: cluster "a": serve_node_ports needs masquerade = true (line 1): replies to a client of a node port would not come back through this host`,
		`11: cluster "b": serve_node_ports: must be true or false, not a string`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}
