package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestMultiClusterKeys: local_service_cidr, allow_external_ips and
// endpoint_cidrs are accepted and parsed; two clusters may then share a
// service range, but not a local one.
func TestMultiClusterKeys(t *testing.T) {
	dir := testDir(t)
	parse := func(toml string) (*Config, error) {
		return Parse([]byte(toml), filepath.Join(dir, "config.toml"))
	}
	cfg, err := parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`,
		`local_service_cidr = "100.64.0.0/16"`, `allow_external_ips = ["192.0.2.0/24"]`, `endpoint_cidrs = ["10.244.0.0/16"]`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`,
	))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	a := cfg.Clusters[0]
	if a.LocalServiceCIDR != netip.MustParsePrefix("100.64.0.0/16") ||
		!reflect.DeepEqual(a.AllowExternalIPs, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}) ||
		!reflect.DeepEqual(a.EndpointCIDRs, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}) {
		t.Errorf("cluster a: %+v", a)
	}
	if s := cfg.Summary()[0]; !strings.Contains(s, "reached here at local_service_cidr 100.64.0.0/16") {
		t.Errorf("Summary %q does not show the local range", s)
	}

	_, err = parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `local_service_cidr = "100.64.0.0/16"`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `local_service_cidr = "100.64.0.0/16"`,
		`allow_external_ips = ["192.0.2.300/24"]`,
	))
	want := []string{
		`10: cluster "b": local_service_cidr 100.64.0.0/16 overlaps cluster "a" local_service_cidr 100.64.0.0/16 (line 5)`,
		`11: cluster "b": allow_external_ips[0] "192.0.2.300/24": invalid IP address`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}
