package daemon

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

type fakeHost struct {
	addrs     []hostcheck.Address
	routes    []hostcheck.Route
	err       error
	routesErr error // Routes only
}

func (f *fakeHost) Addrs() ([]hostcheck.Address, error) { return f.addrs, f.err }
func (f *fakeHost) Routes() ([]hostcheck.Route, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.routes, f.routesErr
}

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
	if len(d.clusters.handles) != 0 || len(d.store.Snapshot().Clusters) != 0 {
		t.Errorf("a refused config changed the clusters")
	}

	host.err = errors.New("netlink: permission denied")
	if err := checkHost(bad, host); err == nil || strings.Contains(err.Error(), "collides") {
		t.Errorf("checkHost with an unreadable host: %v, want the read error", err)
	}
}

// TestRefreshHostFacts: the host's addresses and default gateways reach
// the model; when the routes cannot be read, the addresses still do and
// the gateways stay those read last.
func TestRefreshHostFacts(t *testing.T) {
	d, _ := testDaemon(t)
	d.store.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "a", ServiceCIDRs: []netip.Prefix{alphaCIDR}}}})
	host := &fakeHost{
		addrs: []hostcheck.Address{{IP: netip.MustParseAddr("10.250.0.2"), Link: "eth0"}},
		routes: []hostcheck.Route{
			{Dst: netip.MustParsePrefix("10.250.0.0/24"), Link: "eth0", Connected: true},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Link: "eth0", Gateway: netip.MustParseAddr("10.250.0.1")},
		},
	}
	d.host = host
	d.refreshHostAddrs()
	check := func(ip, want string) {
		t.Helper()
		if _, detail := d.store.CheckTarget("a", netip.MustParseAddr(ip)); detail != want {
			t.Errorf("CheckTarget(%s) = %q, want %q", ip, detail, want)
		}
	}
	check("10.250.0.2", "this host's own address")
	check("10.250.0.1", "this host's default gateway")
	check("10.250.0.3", "")

	host.addrs = append(host.addrs, hostcheck.Address{IP: netip.MustParseAddr("10.250.0.3"), Link: "eth0"})
	host.routesErr = errors.New("netlink: interrupted")
	d.refreshHostAddrs()
	check("10.250.0.3", "this host's own address")
	check("10.250.0.1", "this host's default gateway")
}

// TestAPIServerAddrs: each cluster's apiserver address, from the URL when
// it holds one, else resolved; a name that does not resolve protects
// nothing and stops nothing.
func TestAPIServerAddrs(t *testing.T) {
	d, _ := testDaemon(t)
	var asked []string
	var mu sync.Mutex
	d.lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		asked = append(asked, host)
		mu.Unlock()
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a lookup without a deadline")
		}
		if host == "api.example" {
			return []netip.Addr{netip.MustParseAddr("10.250.0.20"), netip.MustParseAddr("::ffff:10.250.0.21")}, nil
		}
		return nil, errors.New("no such host")
	}
	got := d.apiserverAddrs([]config.Cluster{
		{Name: "ip", Server: "https://10.250.0.10:6443"},
		{Name: "v6", Server: "https://[fd00::10]:6443"},
		{Name: "name", Server: "https://api.example:6443"},
		{Name: "gone", Server: "https://gone.example"},
		{Name: "none"},
	})
	want := map[string][]netip.Addr{
		"ip":   {netip.MustParseAddr("10.250.0.10")},
		"v6":   {netip.MustParseAddr("fd00::10")},
		"name": {netip.MustParseAddr("10.250.0.20"), netip.MustParseAddr("10.250.0.21")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("apiserverAddrs = %v, want %v", got, want)
	}
	slices.Sort(asked)
	if !slices.Equal(asked, []string{"api.example", "gone.example"}) {
		t.Errorf("resolved %q, want only the host names", asked)
	}
}

// TestSetClustersHandsAPIServers: setClusters gives the model every
// cluster's apiserver address, so that another cluster's endpoint there
// is refused.
func TestSetClustersHandsAPIServers(t *testing.T) {
	d, _ := testDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.clusters.setContext(ctx)
	d.host = &fakeHost{}
	d.lookupHost = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("192.0.2.11")}, nil
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	data := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n" +
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
	if err := os.WriteFile(kc, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	err := d.setClusters([]config.Cluster{
		{Name: "alpha", Kubeconfig: kc, ServiceCIDRs: []netip.Prefix{alphaCIDR}, Server: "https://192.0.2.10:6443"},
		{Name: "beta", Kubeconfig: kc, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/16")}, Server: "https://beta.example:6443"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.clusters.stop()
	for _, tt := range []struct{ cluster, ip, want string }{
		{"beta", "192.0.2.10", `cluster "alpha"'s apiserver address`},
		{"alpha", "192.0.2.11", `cluster "beta"'s apiserver address`},
		{"alpha", "192.0.2.10", ""}, // its own: the kubernetes Service
	} {
		if _, detail := d.store.CheckTarget(tt.cluster, netip.MustParseAddr(tt.ip)); detail != tt.want {
			t.Errorf("CheckTarget(%s, %s) = %q, want %q", tt.cluster, tt.ip, detail, tt.want)
		}
	}
}
