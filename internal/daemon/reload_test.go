package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// TestReloadBeforeRun: a SIGHUP caught before Run has started the clusters
// neither panics (a watcher started without Run's context) nor is lost:
// Run starts the clusters of that configuration.
func TestReloadBeforeRun(t *testing.T) {
	d, _ := testDaemon(t)
	d.host = &fakeHost{}
	d.lookupHost = func(context.Context, string) ([]netip.Addr, error) { return nil, nil }
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	// Nothing listens on port 1 of loopback: the watcher fails at once.
	data := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n" +
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
	if err := os.WriteFile(kc, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	next := *d.cfg
	next.Clusters = []config.Cluster{{Name: "alpha", Kubeconfig: kc, ServiceCIDRs: []netip.Prefix{alphaCIDR}}}
	if err := d.Reload(&next); err != nil {
		t.Fatalf("Reload before Run: %v", err)
	}
	// What Run does first with the clusters.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.clusters.setContext(ctx)
	if err := d.startClusters(); err != nil {
		t.Fatal(err)
	}
	defer d.clusters.stop()
	if got := d.clusterStatuses(); len(got) != 1 || got[0].Name != "alpha" {
		t.Errorf("clusters after the start: %+v, want alpha of the early reload", got)
	}
	if err := d.Reload(&next); err != nil {
		t.Errorf("Reload after the start: %v", err)
	}
}

// sizedBackend is a backend that can be sized for at most max endpoint
// entries, and records what it was sized for.
type sizedBackend struct {
	proxy.Backend
	max   int
	sized *int
}

func (b sizedBackend) Resize(cfg *config.Config) error {
	if n := cfg.EndpointEntries(); n > b.max {
		return fmt.Errorf("%d endpoint entries, more than %d", n, b.max)
	}
	*b.sized = cfg.EndpointEntries()
	return nil
}

// TestReloadResizes: a reload hands a backend sized from the limits the
// new configuration first, before and after the start; one it cannot be
// sized for is refused whole.
func TestReloadResizes(t *testing.T) {
	d, _ := testDaemon(t)
	sized := 0
	d.backends = []proxy.Backend{sizedBackend{d.backends[0], 300000, &sized}}
	next := *d.cfg
	next.Clusters = []config.Cluster{{Name: "alpha", ServiceCIDRs: []netip.Prefix{alphaCIDR}}, {Name: "beta", MaxEndpoints: 100001}}
	err := d.Reload(&next)
	if err == nil || !strings.Contains(err.Error(), "300001 endpoint entries, more than 300000") {
		t.Fatalf("Reload past what the backend can hold: %v", err)
	}
	if d.early != nil || sized != 0 {
		t.Errorf("the refused configuration is kept for the start (%v) or sized for (%d)", d.early != nil, sized)
	}
	next.Clusters[1].MaxEndpoints = 100000
	if err := d.Reload(&next); err != nil {
		t.Fatalf("Reload within: %v", err)
	}
	if sized != 300000 {
		t.Errorf("the backend was sized for %d endpoint entries, want 300000", sized)
	}
}

// familyBackend is a backend of the modes of TestAddFamilies.
type familyBackend struct{ proxy.Backend }

// newFamilies records the families each New of those modes was asked for.
var newFamilies [][]bool

func init() {
	for _, both := range []bool{false, true} {
		proxy.Register(&proxy.Mode{
			Name: config.Mode(map[bool]string{false: "per-family", true: "both-families"}[both]),
			New: func(env proxy.Env) ([]proxy.Backend, error) {
				newFamilies = append(newFamilies, env.Families)
				return []proxy.Backend{familyBackend{}}, nil
			},
			BothFamilies: both,
			InUse:        func(context.Context) bool { return false },
			Cleanup:      func(context.Context, *slog.Logger) error { return nil },
			Explainer:    func(*config.Config, *slog.Logger) proxy.Explainer { return iptables.NewExplainerFor(nil) },
		})
	}
}

// TestAddFamilies: a reload that adds the first IPv6 service range makes
// an IPv6 backend for a mode with a backend per family, and none for a
// mode whose one backend serves both (ebpf mode): a second would write
// the same maps, and status would list its hooks twice.
func TestAddFamilies(t *testing.T) {
	v6 := config.Config{Clusters: []config.Cluster{{Name: "alpha", ServiceCIDRs: []netip.Prefix{alphaCIDR, netip.MustParsePrefix("fd00:96::/108")}}}}
	for _, c := range []struct {
		mode         string
		wantNew      [][]bool
		wantBackends int
	}{
		{"per-family", [][]bool{{true}}, 2},
		{"both-families", nil, 1},
	} {
		d, _ := testDaemon(t)
		d.mode, d.fixedBackends, d.families = proxy.Lookup(config.Mode(c.mode)), false, []bool{false}
		newFamilies = nil
		if err := d.addFamilies(&v6); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(newFamilies, c.wantNew) || len(d.backendList()) != c.wantBackends || !reflect.DeepEqual(d.families, []bool{false, true}) {
			t.Errorf("%s: New asked for %v, %d backends, families %v; want %v, %d backends, families [false true]",
				c.mode, newFamilies, len(d.backendList()), d.families, c.wantNew, c.wantBackends)
		}
	}
}
