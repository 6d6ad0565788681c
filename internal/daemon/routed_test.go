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
