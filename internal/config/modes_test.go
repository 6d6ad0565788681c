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
	RegisterMode("iptables", all, Bounds{})
	RegisterMode("ipvs", all, Bounds{})
	RegisterMode("limited", Capabilities{CanReject}, Bounds{})
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
		`2: masquerade: mode "limited" cannot do masquerading; use mode = "iptables" or mode = "ipvs"`,
		`3: routed_clients: mode "limited" cannot do routed clients; use mode = "iptables" or mode = "ipvs"`,
		`7: cluster "a": service_cidrs: mode "limited" cannot do IPv6 services; use mode = "iptables" or mode = "ipvs"`,
		`8: cluster "a": serve_node_ports: mode "limited" cannot do node ports; use mode = "iptables" or mode = "ipvs"`,
		`9: cluster "a": allow_external_ips: mode "limited" cannot do external IPs; use mode = "iptables" or mode = "ipvs"`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

// TestAutoAsks: with mode = "auto" the same config passes (some mode can do
// it all) and records what it asks, for the daemon's choice; a capability
// no mode of the build has is refused, naming the key.
func TestAutoAsks(t *testing.T) {
	dir := testDir(t)
	text := lines(
		`mode = "auto"`,
		`masquerade = true`,
		`routed_clients = ["192.168.50.0/24"]`,
		`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`,
		`service_cidrs = ["10.96.0.0/16", "fd00:96::/112"]`,
		`serve_node_ports = true`,
	)
	cfg, err := Parse([]byte(text), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Capabilities{CanRoutedClients, CanMasquerade, CanNodePorts, CanIPv6}
	if !reflect.DeepEqual(cfg.Asks, want) {
		t.Errorf("Asks = %q, want %q", cfg.Asks, want)
	}

	modesMu.Lock()
	saved := modes
	modes = map[Mode]modeInfo{"limited": {can: Capabilities{CanReject}}}
	modesMu.Unlock()
	t.Cleanup(func() { modesMu.Lock(); modes = saved; modesMu.Unlock() })
	_, err = Parse([]byte(text), filepath.Join(dir, "config.toml"))
	wantProblems := []string{
		`2: masquerade: no mode of this build can do masquerading (mode = "auto")`,
		`3: routed_clients: no mode of this build can do routed clients (mode = "auto")`,
		`7: cluster "a": service_cidrs: no mode of this build can do IPv6 services (mode = "auto")`,
		`8: cluster "a": serve_node_ports: no mode of this build can do node ports (mode = "auto")`,
	}
	if got := problems(t, err); !reflect.DeepEqual(got, wantProblems) {
		t.Errorf("problems:\n got %q\nwant %q", got, wantProblems)
	}
}

// TestEBPFKeys: ebpf mode's keys are typed paths, each problem with its
// line; the defaults stand when they are not set.
func TestEBPFKeys(t *testing.T) {
	dir := testDir(t)
	cluster := lines(`[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`)
	cfg, err := Parse([]byte(cluster), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EBPFCgroup != "" || cfg.EBPFPinDir != "/sys/fs/bpf/kube-outpost" {
		t.Errorf("defaults: cgroup %q, pin dir %q", cfg.EBPFCgroup, cfg.EBPFPinDir)
	}
	cfg, err = Parse([]byte(lines(`ebpf_cgroup = "/sys/fs/cgroup/unified/app.slice/"`, `ebpf_pin_dir = "/sys/fs/bpf/ko-2"`)+cluster), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EBPFCgroup != "/sys/fs/cgroup/unified/app.slice" || cfg.EBPFPinDir != "/sys/fs/bpf/ko-2" {
		t.Errorf("set: cgroup %q, pin dir %q", cfg.EBPFCgroup, cfg.EBPFPinDir)
	}
	for _, c := range []struct{ text, want string }{
		{`ebpf_cgroup = "app.slice"`, `1: ebpf_cgroup "app.slice": must be an absolute path of a cgroup v2 directory, or "" for the root of the cgroup v2 hierarchy`},
		{`ebpf_cgroup = 3`, `1: ebpf_cgroup: must be a path like "/sys/fs/cgroup/system.slice", not an integer`},
		{`ebpf_pin_dir = "/tmp/pins"`, `1: ebpf_pin_dir "/tmp/pins": must be a directory directly under /sys/fs/bpf, like "/sys/fs/bpf/kube-outpost"`},
		{`ebpf_pin_dir = "/sys/fs/bpf"`, `1: ebpf_pin_dir "/sys/fs/bpf": must be a directory directly under /sys/fs/bpf, like "/sys/fs/bpf/kube-outpost"`},
		{`ebpf_pin_dir = "/sys/fs/bpf/a/b"`, `1: ebpf_pin_dir "/sys/fs/bpf/a/b": must be a directory directly under /sys/fs/bpf, like "/sys/fs/bpf/kube-outpost"`},
		{`ebpf_pin_dir = ""`, `1: ebpf_pin_dir "": must be a directory directly under /sys/fs/bpf, like "/sys/fs/bpf/kube-outpost"`},
	} {
		_, err := Parse([]byte(lines(c.text)+cluster), filepath.Join(dir, "config.toml"))
		if got := problems(t, err); !reflect.DeepEqual(got, []string{c.want}) {
			t.Errorf("%s:\n got %q\nwant %q", c.text, got, []string{c.want})
		}
	}
}
