package names

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

func TestZonesOf(t *testing.T) {
	zones := ZonesOf([]config.Cluster{{Name: "prod", DNSZone: "prod.internal", DNSDefault: true}, {Name: "dev", DNSZone: "dev.example"}})
	if !slices.Equal(zones["prod"], []string{"prod.internal", "cluster.local"}) || !slices.Equal(zones["dev"], []string{"dev.example"}) || len(zones) != 2 {
		t.Errorf("zones %v", zones)
	}
}

// A cluster reached at a local range answers that range's reverse names,
// not those of the service range it maps, which another cluster may use.
func TestReverseZonesOf(t *testing.T) {
	c := config.Cluster{Name: "dev",
		ServiceCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/112")},
		LocalServiceCIDR: netip.MustParsePrefix("10.196.0.0/16")}
	want := []string{"196.10.in-addr.arpa", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa"}
	if got := ReverseZonesOf(c); !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}
