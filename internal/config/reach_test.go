package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestReachKeys: reach and node_address_types are cluster keys now that the
// daemon acts on them; bad values are refused with their line.
func TestReachKeys(t *testing.T) {
	dir := testDir(t)
	parse := func(toml string) (*Config, error) {
		return Parse([]byte(toml), filepath.Join(dir, "config.toml"))
	}
	cfg, err := parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `reach = "nodeport"`,
		`node_address_types = ["ExternalIP", "InternalIP"]`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`, `reach = "routes"`,
		`[[clusters]]`, `name = "c"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.98.0.0/16"]`,
	))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	got := []any{cfg.Clusters[0].Reach, cfg.Clusters[0].NodeAddressTypes, cfg.Clusters[1].Reach, cfg.Clusters[1].NodeAddressTypes,
		cfg.Clusters[2].Reach, cfg.Clusters[2].NodeAddressTypes}
	want := []any{ReachNodePort, []string{"ExternalIP", "InternalIP"}, ReachRoutes, []string{"InternalIP"}, ReachDirect, []string{"InternalIP"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reach and node_address_types:\n got %v\nwant %v", got, want)
	}

	_, err = parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `reach = "tunnel"`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`, `reach = "routes"`,
		`node_address_types = ["Hostname"]`,
	))
	want = []any{
		`5: cluster "a": reach "tunnel": must be direct, nodeport or routes`,
		`11: cluster "b": node_address_types[0] "Hostname": must be one of InternalIP, ExternalIP, each once`,
	}
	if got := problems(t, err); !reflect.DeepEqual(toAny(got), want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
