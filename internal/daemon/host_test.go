package daemon

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
)

type fakeHost struct {
	addrs []hostcheck.Address
	err   error
}

func (f *fakeHost) Addrs() ([]hostcheck.Address, error) { return f.addrs, f.err }
func (f *fakeHost) Routes() ([]hostcheck.Route, error)  { return nil, f.err }

// TestSetClustersRefusesHostCollision: a reload whose local range holds an
// address of this host is refused before anything changes; one that
// cannot be checked is not (the datapath matters more than the check).
func TestSetClustersRefusesHostCollision(t *testing.T) {
	d, _ := testDaemon(t)
	host := &fakeHost{addrs: []hostcheck.Address{{IP: netip.MustParseAddr("100.64.0.1"), Link: "eth0"}}}
	d.host = host
	bad := []config.Cluster{{Name: "a", ServiceCIDRs: []netip.Prefix{alphaCIDR}, LocalServiceCIDR: netip.MustParsePrefix("100.64.0.0/16")}}
	err := d.setClusters(bad)
	if err == nil || !strings.Contains(err.Error(), `cluster "a": local_service_cidr 100.64.0.0/16 collides with address 100.64.0.1 on eth0`) {
		t.Fatalf("setClusters with a colliding local range: %v", err)
	}
	if len(d.clusters) != 0 || len(d.store.Snapshot().Clusters) != 0 {
		t.Errorf("a refused config changed the clusters")
	}

	host.err = errors.New("netlink: permission denied")
	if err := checkHost(bad, host); err == nil || strings.Contains(err.Error(), "collides") {
		t.Errorf("checkHost with an unreadable host: %v, want the read error", err)
	}
}
