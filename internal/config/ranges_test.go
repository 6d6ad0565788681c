package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// ipKubeconfig is a kubeconfig whose apiserver is at https://ip:6443.
func ipKubeconfig(t *testing.T, dir, name, ip string) {
	t.Helper()
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://" + ip + ":6443\n" +
		"users:\n- name: u\n  user:\n    tokenFile: /dev/null\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRangesNoClusterOwns: every range a cluster decides about is refused
// when it is everything, too wide, or overlaps a range that belongs to no
// cluster; endpoint_cidrs only when it is everything.
func TestRangesNoClusterOwns(t *testing.T) {
	dir := testDir(t)
	_, err := Parse([]byte(lines(
		`[[clusters]]`,
		`name = "a"`,
		`kubeconfig = "prod.kubeconfig"`,
		`service_cidrs = ["0.0.0.0/0", "::/0"]`,
		`allow_external_ips = ["10.0.0.0/7", "169.254.0.0/24", "224.0.0.0/8", "203.0.113.0/24"]`,
		`endpoint_cidrs = ["0.0.0.0/0", "10.0.0.0/8", "fe80::/10"]`,
		`[[clusters]]`,
		`name = "b"`,
		`kubeconfig = "prod.kubeconfig"`,
		`service_cidrs = ["127.0.0.0/16", "fe80::/112"]`,
		`local_service_cidr = "ff02::/112"`,
		`allow_external_ips = ["2001:db8::/31", "::/120"]`,
		`[[clusters]]`,
		`name = "c"`,
		`kubeconfig = "prod.kubeconfig"`,
		`service_cidrs = ["0.0.0.0/16"]`,
		`allow_external_ips = ["::ffff:10.0.0.0/120", "255.255.255.255/32"]`,
	)), filepath.Join(dir, "config.toml"))
	want := []string{
		`4: cluster "a": service_cidrs[0] 0.0.0.0/0 is every IPv4 address: the cluster would decide where any connection of this host goes; list the cluster's own ranges`,
		`4: cluster "a": service_cidrs[1] ::/0 is every IPv6 address: the cluster would decide where any connection of this host goes; list the cluster's own ranges`,
		`5: cluster "a": allow_external_ips[0] 10.0.0.0/7 is wider than /8, more than any cluster owns (a Kubernetes service range is at most a /12 for IPv4, and far narrower than a /32 for IPv6); list the cluster's own ranges`,
		`5: cluster "a": allow_external_ips[1] 169.254.0.0/24 overlaps 169.254.0.0/16 link-local (where cloud metadata answers), which no cluster can own`,
		`5: cluster "a": allow_external_ips[2] 224.0.0.0/8 overlaps 224.0.0.0/4 multicast, which no cluster can own`,
		`6: cluster "a": endpoint_cidrs[0] 0.0.0.0/0 allows every address, as leaving endpoint_cidrs out does, while it reads like a limit: list the cluster's pod (and node) networks instead`,
		`10: cluster "b": service_cidrs[0] 127.0.0.0/16 overlaps cluster "a" service_cidrs[0] 0.0.0.0/0 (line 4): two clusters cannot share ClusterIPs on one host; set local_service_cidr on one of them to reach its ClusterIPs at a range of this host's own`,
		`10: cluster "b": service_cidrs[0] 127.0.0.0/16 overlaps 127.0.0.0/8 loopback, which no cluster can own`,
		`10: cluster "b": service_cidrs[1] fe80::/112 overlaps fe80::/10 link-local, which no cluster can own`,
		`11: cluster "b": local_service_cidr ff02::/112 overlaps cluster "a" service_cidrs[1] ::/0 (line 4)`,
		`11: cluster "b": local_service_cidr ff02::/112 overlaps ff00::/8 multicast, which no cluster can own`,
		`12: cluster "b": allow_external_ips[0] 2001:db8::/31 is wider than /32, more than any cluster owns (a Kubernetes service range is at most a /12 for IPv4, and far narrower than a /32 for IPv6); list the cluster's own ranges`,
		`12: cluster "b": allow_external_ips[1] ::/120 overlaps ::/128 the unspecified address (a connection to :: reaches this host itself), which no cluster can own`,
		`12: cluster "b": allow_external_ips[1] ::/120 overlaps ::1/128 loopback, which no cluster can own`,
		`16: cluster "c": service_cidrs[0] 0.0.0.0/16 overlaps cluster "a" service_cidrs[0] 0.0.0.0/0 (line 4): two clusters cannot share ClusterIPs on one host; set local_service_cidr on one of them to reach its ClusterIPs at a range of this host's own`,
		`16: cluster "c": service_cidrs[0] 0.0.0.0/16 overlaps 0.0.0.0/8 "this network" (a connection to 0.0.0.0 reaches this host itself), which no cluster can own`,
		`17: cluster "c": allow_external_ips[0] ::ffff:10.0.0.0/120 overlaps ::ffff:0.0.0.0/96 IPv4-mapped (IPv4 addresses written as IPv6), which no cluster can own`,
		`17: cluster "c": allow_external_ips[1] 255.255.255.255/32 overlaps 255.255.255.255/32 broadcast, which no cluster can own`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

// TestRangesHoldingAnAPIServer: no cluster's range may hold the address
// of any configured apiserver, its own or another's.
func TestRangesHoldingAnAPIServer(t *testing.T) {
	dir := testDir(t)
	ipKubeconfig(t, dir, "a.kubeconfig", "10.96.0.1")
	ipKubeconfig(t, dir, "b.kubeconfig", "[fd00:50::10]")
	_, err := Parse([]byte(lines(
		`[[clusters]]`,
		`name = "a"`,
		`kubeconfig = "a.kubeconfig"`,
		`service_cidrs = ["10.96.0.0/16"]`,
		`[[clusters]]`,
		`name = "b"`,
		`kubeconfig = "b.kubeconfig"`,
		`service_cidrs = ["10.96.0.0/16"]`, // mapped away: a's apiserver is not among its addresses here
		`local_service_cidr = "100.64.0.0/16"`,
		`allow_external_ips = ["fd00:50::/120", "192.0.2.0/24"]`,
		`endpoint_cidrs = ["10.0.0.0/8", "fd00:50::/64"]`, // may hold them: pods and apiservers often share a network
		`[[clusters]]`,
		`name = "c"`,
		`kubeconfig = "prod.kubeconfig"`, // a host name: not resolved
		`service_cidrs = ["10.97.0.0/16"]`,
		`local_service_cidr = "10.96.0.0/16"`,
	)), filepath.Join(dir, "config.toml"))
	want := []string{
		`4: cluster "a": service_cidrs[0] 10.96.0.0/16 holds 10.96.0.1, the apiserver address of this cluster (kubeconfig, line 3): an address there could capture this host's connection to that apiserver`,
		`10: cluster "b": allow_external_ips[0] fd00:50::/120 holds fd00:50::10, the apiserver address of this cluster (kubeconfig, line 7): an address there could capture this host's connection to that apiserver`,
		`16: cluster "c": local_service_cidr 10.96.0.0/16 overlaps cluster "a" service_cidrs[0] 10.96.0.0/16 (line 4)`,
		`16: cluster "c": local_service_cidr 10.96.0.0/16 holds 10.96.0.1, the apiserver address of cluster "a" (kubeconfig, line 3): an address there could capture this host's connection to that apiserver`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

// TestRangesOrdinary: ranges clusters really have pass.
func TestRangesOrdinary(t *testing.T) {
	dir := testDir(t)
	ipKubeconfig(t, dir, "a.kubeconfig", "192.0.2.10")
	_, err := Parse([]byte(lines(
		`[[clusters]]`,
		`name = "a"`,
		`kubeconfig = "a.kubeconfig"`,
		`service_cidrs = ["10.96.0.0/12", "fd00:10:96::/108"]`,
		`local_service_cidr = "100.64.0.0/12"`,
		`allow_external_ips = ["198.51.100.0/24", "10.0.0.0/8", "2001:db8::/32"]`,
		`endpoint_cidrs = ["10.244.0.0/16", "192.0.2.0/24"]`,
	)), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Errorf("ordinary ranges refused:\n%v", err)
	}
}
