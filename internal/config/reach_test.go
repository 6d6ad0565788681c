package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/reach"
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
		`pod_cidrs = ["10.245.0.0/16", "fd00:245::/56"]`,
		`[[clusters]]`, `name = "c"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.98.0.0/16"]`,
	))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	got := []any{cfg.Clusters[0].Reach, cfg.Clusters[0].NodeAddressTypes, cfg.Clusters[1].Reach, cfg.Clusters[1].NodeAddressTypes,
		cfg.Clusters[2].Reach, cfg.Clusters[2].NodeAddressTypes}
	want := []any{reach.NodePort, []string{"ExternalIP", "InternalIP"}, reach.Routes, []string{"InternalIP"}, reach.Direct, []string{"InternalIP"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reach and node_address_types:\n got %v\nwant %v", got, want)
	}
	if got, want := cfg.Clusters[1].PodCIDRs, []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16"), netip.MustParsePrefix("fd00:245::/56")}; !reflect.DeepEqual(got, want) {
		t.Errorf("pod_cidrs %v, want %v", got, want)
	}

	_, err = parse(lines(
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `reach = "tunnel"`,
		`[[clusters]]`, `name = "b"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.97.0.0/16"]`, `reach = "routes"`,
		`node_address_types = ["Hostname"]`, `pod_cidrs = ["10.245.0.0/16"]`,
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

// TestPodCIDRs: pod_cidrs is required with reach = "routes" and refused
// where a cluster's routes would reach beyond its own pods: special ranges,
// another cluster's pod ranges, any cluster's service ranges.
func TestPodCIDRs(t *testing.T) {
	dir := testDir(t)
	parse := func(l ...string) error {
		_, err := Parse([]byte(lines(l...)), filepath.Join(dir, "config.toml"))
		return err
	}
	cluster := func(name, services string, more ...string) []string {
		return append([]string{`[[clusters]]`, `name = "` + name + `"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ` + services}, more...)
	}
	var cfg []string
	cfg = append(cfg, cluster("a", `["10.96.0.0/16"]`, `reach = "routes"`)...)
	cfg = append(cfg, cluster("b", `["10.97.0.0/16"]`, `reach = "routes"`, `pod_cidrs = []`)...)
	cfg = append(cfg, cluster("c", `["10.98.0.0/16"]`, `reach = "nodeport"`, `pod_cidrs = ["10.246.0.0/16"]`)...)
	cfg = append(cfg, cluster("d", `["10.99.0.0/16"]`, `reach = "routes"`,
		`pod_cidrs = ["0.0.0.0/0", "::/0", "127.0.0.0/16", "169.254.0.0/16", "224.0.0.0/8", "fe80::/64", "10.245.0.1/16", "10.0.0.0/8", "10.1.0.0/16"]`)...)
	cfg = append(cfg, cluster("e", `["10.100.0.0/16"]`, `reach = "routes"`, `local_service_cidr = "100.64.0.0/16"`,
		`pod_cidrs = ["10.4.0.0/16", "10.96.128.0/17", "10.100.0.0/24", "100.64.0.0/24"]`)...)
	cfg = append(cfg, cluster("f", `["10.101.0.0/16"]`, `reach = "tunnel"`, `pod_cidrs = ["10.247.0.0/16"]`)...)
	want := []string{
		`5: cluster "a": pod_cidrs is required with reach = "routes": the ranges this cluster's nodes take their pod CIDRs from (kube-controller-manager's --cluster-cidr), like ["10.244.0.0/16"]; a node's pod CIDR outside them is not routed`,
		`11: cluster "b": pod_cidrs is empty: no node's pod CIDR would be routed`,
		`17: cluster "c": pod_cidrs is only used with reach = "routes"`,
		`23: cluster "d": pod_cidrs[0] 0.0.0.0/0: every address: a cluster would decide where all of this host's traffic goes: no cluster's pods can be there`,
		`23: cluster "d": pod_cidrs[1] ::/0: every address: a cluster would decide where all of this host's traffic goes: no cluster's pods can be there`,
		`23: cluster "d": pod_cidrs[2] 127.0.0.0/16: overlaps loopback: no cluster's pods can be there`,
		`23: cluster "d": pod_cidrs[3] 169.254.0.0/16: overlaps link-local addresses (the cloud metadata service among them): no cluster's pods can be there`,
		`23: cluster "d": pod_cidrs[4] 224.0.0.0/8: overlaps multicast: no cluster's pods can be there`,
		`23: cluster "d": pod_cidrs[5] fe80::/64: overlaps link-local addresses: no cluster's pods can be there`,
		`23: cluster "d": pod_cidrs[6] "10.245.0.1/16": not a network address (did you mean 10.245.0.0/16?)`,
		`23: cluster "d": pod_cidrs[8] 10.1.0.0/16 overlaps 10.0.0.0/8, listed before it`,
		`23: cluster "d": pod_cidrs 10.0.0.0/8 overlaps cluster "a" service_cidrs[0] 10.96.0.0/16 (line 4): an address cannot be both a Service's and a pod's`,
		`23: cluster "d": pod_cidrs 10.0.0.0/8 overlaps cluster "b" service_cidrs[0] 10.97.0.0/16 (line 9): an address cannot be both a Service's and a pod's`,
		`23: cluster "d": pod_cidrs 10.0.0.0/8 overlaps cluster "c" service_cidrs[0] 10.98.0.0/16 (line 15): an address cannot be both a Service's and a pod's`,
		`23: cluster "d": pod_cidrs 10.0.0.0/8 overlaps cluster "d" service_cidrs[0] 10.99.0.0/16 (line 21): an address cannot be both a Service's and a pod's`,
		`23: cluster "d": pod_cidrs 10.0.0.0/8 overlaps cluster "e" service_cidrs[0] 10.100.0.0/16 (line 27): an address cannot be both a Service's and a pod's`,
		`23: cluster "d": pod_cidrs 10.0.0.0/8 overlaps cluster "f" service_cidrs[0] 10.101.0.0/16 (line 34): an address cannot be both a Service's and a pod's`,
		`30: cluster "e": pod_cidrs 10.4.0.0/16 overlaps cluster "d" pod_cidrs 10.0.0.0/8 (line 23): one destination cannot be routed to two clusters' nodes`,
		`30: cluster "e": pod_cidrs 10.96.128.0/17 overlaps cluster "d" pod_cidrs 10.0.0.0/8 (line 23): one destination cannot be routed to two clusters' nodes`,
		`30: cluster "e": pod_cidrs 10.96.128.0/17 overlaps cluster "a" service_cidrs[0] 10.96.0.0/16 (line 4): an address cannot be both a Service's and a pod's`,
		`30: cluster "e": pod_cidrs 10.100.0.0/24 overlaps cluster "d" pod_cidrs 10.0.0.0/8 (line 23): one destination cannot be routed to two clusters' nodes`,
		`30: cluster "e": pod_cidrs 10.100.0.0/24 overlaps cluster "e" service_cidrs[0] 10.100.0.0/16 (line 27): an address cannot be both a Service's and a pod's`,
		`30: cluster "e": pod_cidrs 100.64.0.0/24 overlaps cluster "e" local_service_cidr 100.64.0.0/16 (line 29): an address cannot be both a Service's and a pod's`,
		`35: cluster "f": reach "tunnel": must be direct, nodeport or routes`,
	}
	got := problems(t, parse(cfg...))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
