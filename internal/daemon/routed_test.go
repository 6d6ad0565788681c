package daemon

import (
	"net/netip"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// TestRoutedClientsNeedRestart: routed_clients is given to the backends
// when they are made, so a reload that changes it says it needs a restart,
// and one that keeps it says nothing.
func TestRoutedClientsNeedRestart(t *testing.T) {
	a := &config.Config{RoutedClients: []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16")}}
	same := &config.Config{RoutedClients: []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16")}}
	more := &config.Config{RoutedClients: []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("10.20.0.0/16")}}
	if d := globalDiff(a, same); d != "" {
		t.Errorf("same routed_clients: diff %q", d)
	}
	if d := globalDiff(a, more); d != "routed_clients" {
		t.Errorf("another routed_clients: diff %q, want routed_clients", d)
	}
	if d := globalDiff(a, &config.Config{}); d != "routed_clients" {
		t.Errorf("routed_clients removed: diff %q, want routed_clients", d)
	}
}

// TestEBPFKeysNeedRestart: ebpf mode's cgroup and pin directory are given
// to its backend when it is made; a reload that changes them says so
// rather than keep the running ones without a word.
func TestEBPFKeysNeedRestart(t *testing.T) {
	a := &config.Config{EBPFCgroup: "/sys/fs/cgroup/a.slice", EBPFPinDir: config.DefaultEBPFPinDir}
	for _, b := range []*config.Config{
		{EBPFCgroup: "/sys/fs/cgroup/b.slice", EBPFPinDir: config.DefaultEBPFPinDir},
		{EBPFCgroup: "/sys/fs/cgroup/a.slice", EBPFPinDir: config.DefaultBPFFS + "/other"},
	} {
		if d := globalDiff(a, b); d != "ebpf_cgroup, ebpf_pin_dir" {
			t.Errorf("%+v to %+v: diff %q, want ebpf_cgroup, ebpf_pin_dir", a, b, d)
		}
	}
	if d := globalDiff(a, &config.Config{EBPFCgroup: a.EBPFCgroup, EBPFPinDir: a.EBPFPinDir}); d != "" {
		t.Errorf("the same keys: diff %q", d)
	}
}
