package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestLimits: the limit keys take positive integers, absent ones stay 0
// (the default), and bad ones are refused with their line and key.
func TestLimits(t *testing.T) {
	dir := testDir(t)
	parse := func(toml string) (*Config, error) {
		return Parse([]byte(toml), filepath.Join(dir, "config.toml"))
	}
	cfg, err := parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`,
		`max_services = 500`, `max_endpoints_per_port = 5000`, `max_endpoints = 1_000_000`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`,
	))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	a, b := cfg.Clusters[0], cfg.Clusters[1]
	if a.MaxServices != 500 || a.MaxEndpointsPerPort != 5000 || a.MaxEndpoints != 1000000 {
		t.Errorf("cluster a: limits %d %d %d, want 500 5000 1000000", a.MaxServices, a.MaxEndpointsPerPort, a.MaxEndpoints)
	}
	if b.MaxServices != 0 || b.MaxEndpointsPerPort != 0 || b.MaxEndpoints != 0 {
		t.Errorf("cluster b: limits %d %d %d, want 0 (the defaults)", b.MaxServices, b.MaxEndpointsPerPort, b.MaxEndpoints)
	}

	_, err = parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`,
		`max_services = 0`, `max_endpoints_per_port = "1000"`, `max_endpoints = 20_000_000`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`,
		`max_service = 10`, `max_endpoints_per_port = -1`,
	))
	want := []string{
		`5: cluster "a": max_services 0: must be 1 to 1000000 (the default is 20000)`,
		`6: cluster "a": max_endpoints_per_port: must be an integer like 1000, not a string`,
		`7: cluster "a": max_endpoints 20000000: must be 1 to 10000000 (the default is 200000)`,
		`12: unknown key "clusters[1].max_service" (did you mean "max_services"?)`,
		`13: cluster "b": max_endpoints_per_port -1: must be 1 to 1000000 (the default is 1000)`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}
