package daemon

import (
	"net/netip"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
	"github.com/kube-outpost/kube-outpost/internal/routes"
)

// TestSyncRoutesLastKnownState: after a reboot the kernel holds no route;
// a routes cluster whose node list is not known yet but which serves its
// last known state is routed by that state's nodes, checked as live ones.
func TestSyncRoutesLastKnownState(t *testing.T) {
	d, _ := testDaemon(t)
	kernel := routes.NewFake([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/24")})
	d.routes.installer = routes.New(routes.Options{Kernel: kernel})
	down := cluster.NewNodeWatcher(fake.NewClientset(), cluster.NodeWatcherOptions{Cluster: "alpha"}) // never started
	cfg := config.Cluster{Name: "alpha", Reach: reach.Routes, NodeAddressTypes: []string{reach.NodeInternalIP},
		ServiceCIDRs: []netip.Prefix{alphaCIDR}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}}
	d.clusters.handles["alpha"] = &clusterHandle{cfg: cfg, nodes: down}
	d.store.SetClusters([]model.ClusterConfig{{Cluster: cfg}})
	d.routes.host = &routeHost{}
	noResolvers(t)
	node := func(name, ip, cidr string) model.NodeInfo {
		return model.NodeInfo{Name: name, Ready: true, Addresses: []model.NodeAddr{{Type: reach.NodeInternalIP, Addr: netip.MustParseAddr(ip)}},
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix(cidr)}}
	}
	kept := model.Objects{NodesKnown: true, Nodes: []model.NodeInfo{
		node("n1", "192.0.2.1", "10.245.1.0/24"),
		node("n2", "192.0.2.2", "10.99.0.0/24"), // outside pod_cidrs
	}}
	if err := d.store.ServeLastKnown("alpha", kept, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := d.routes.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if got, want := kernel.Dump(), "10.245.1.0/24 via 192.0.2.1 proto 95 metric 2048\n"; got != want {
		t.Errorf("routes from the last known state:\n%s\nwant:\n%s", got, want)
	}
}
