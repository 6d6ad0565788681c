// It uses testDaemon, service and slice of observe_test.go.

package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/status"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
)

// TestStatusSource: what the socket answers comes from the store, the
// watchers and the sync loop, and explain reads the kernel the backend
// wrote.
func TestStatusSource(t *testing.T) {
	d, fake := testDaemon(t)
	d.store.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "alpha", ServiceCIDRs: []netip.Prefix{alphaCIDR}}}})
	d.store.UpsertService("alpha", service("web", "10.96.0.10"))
	d.store.UpsertSlice("alpha", slice("web", time.Now(), "10.0.0.1", "10.0.0.2", "127.0.0.1"))
	d.store.SetSynced("alpha")
	if err := d.loop.sync(t.Context(), syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
	src := newStatusSource(d)
	src.explainer = func() (proxy.Explainer, error) {
		return iptables.NewExplainerFor(map[bool]iptables.Runner{false: fake}), nil
	}

	r := src.Status()
	if r.Mode != "iptables" || r.LastSync.At.IsZero() || r.LastSync.Error != "" || !r.LastSuccess.At.Equal(r.LastSync.At) {
		t.Errorf("report %+v", r)
	}
	if len(r.Clusters) != 1 {
		t.Fatalf("clusters %+v", r.Clusters)
	}
	c := r.Clusters[0]
	if !c.Synced || c.Services != 1 || c.Endpoints != 2 || len(c.Refused) != 1 || !strings.Contains(c.Refused[0].Reason, "127.0.0.1 is a loopback address") {
		t.Errorf("cluster %+v", c)
	}

	q, _ := model.ParseQuery("alpha/ns/web")
	ex, err := src.Explain(t.Context(), q)
	if err != nil || ex.Mode != "iptables" || len(ex.Ports) != 1 || len(ex.Ports[0].Mismatches) != 0 || len(ex.Ports[0].Kernel.Endpoints) != 2 {
		t.Errorf("explain: %+v, %v", ex, err)
	}
	if len(ex.Ports) == 1 && (len(ex.Ports[0].Excluded) != 1 || ex.Ports[0].Excluded[0].Reason != string(model.ExcludedUnsafe)) {
		t.Errorf("excluded %+v", ex.Ports[0].Excluded)
	}

	// A failed sync: the last attempt says so, the last success stays.
	fake.FailNext = &iptables.RestoreError{Output: "line 3 failed", Err: os.ErrInvalid}
	d.store.UpsertSlice("alpha", slice("web", time.Now(), "10.0.0.1"))
	d.loop.sync(t.Context(), syncrunner.Run{})
	r = src.Status()
	if r.LastSync.Error == "" || r.LastSuccess.Error != "" || !r.LastSuccess.At.Before(r.LastSync.At) {
		t.Errorf("after a failed sync: last %+v, last success %+v", r.LastSync, r.LastSuccess)
	}
}

// TestStatusSourceExplainer: explain reads the kernel through the
// configured mode's explainer, from the registry; a mode this build lacks
// is an error of explain, not of the daemon.
func TestStatusSourceExplainer(t *testing.T) {
	if len(proxy.Modes()) == 0 {
		t.Fatal("no mode registered")
	}
	for _, m := range proxy.Modes() {
		d, _ := testDaemon(t)
		d.cfg.Mode, d.mode = m.Name, m
		if ex, err := newStatusSource(d).explainer(); err != nil || ex == nil {
			t.Errorf("mode %s: explainer %v, %v", m.Name, ex, err)
		}
	}
	d, _ := testDaemon(t)
	d.cfg.Mode, d.mode = "carrier-pigeon", nil
	q, _ := model.ParseQuery("alpha/ns/web")
	var nse *proxy.NotSupportedError
	if _, err := newStatusSource(d).Explain(t.Context(), q); !errors.As(err, &nse) || nse.Mode != "carrier-pigeon" {
		t.Errorf("explain in a mode not in this build: %v", err)
	}
}

// TestRunStatusSocket: Run serves the socket, a second daemon on the same
// socket does not start, and the socket goes with the daemon.
func TestRunStatusSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "ko-") // a socket path has 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "status.sock")
	d, _ := testDaemon(t)
	d.cfg.StatusSocket = sock
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := status.Get(t.Context(), sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the status socket never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	d2, _ := testDaemon(t)
	d2.cfg.StatusSocket = sock
	if err := d2.Run(t.Context()); !errors.Is(err, status.ErrInUse) {
		t.Errorf("a second daemon on the same socket: %v, want status.ErrInUse", err)
	}
	cancel()
	<-done
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after Run returned: %v", err)
	}
}

// familiesSeen records the IP families of the configs an explainer of the
// mode "explain-recorder" was made for.
var familiesSeen [][]bool

func init() {
	proxy.Register(&proxy.Mode{
		Name:    "explain-recorder",
		New:     func(proxy.Env) ([]proxy.Backend, error) { return nil, nil },
		InUse:   func(context.Context) bool { return false },
		Cleanup: func(context.Context, *slog.Logger) error { return nil },
		Explainer: func(cfg *config.Config, log *slog.Logger) proxy.Explainer {
			familiesSeen = append(familiesSeen, proxy.Families(cfg))
			return iptables.NewExplainerFor(nil)
		},
	})
}

// TestExplainerFollowsReload: explain reads the rules of the IP families
// of the clusters now, so after a reload that adds the first IPv6 range
// its explainer is made anew, with both families; otherwise it is kept.
func TestExplainerFollowsReload(t *testing.T) {
	d, _ := testDaemon(t)
	d.mode = proxy.Lookup("explain-recorder")
	familiesSeen = nil
	setHandles := func(cidrs ...string) {
		d.clusters.mu.Lock()
		defer d.clusters.mu.Unlock()
		c := config.Cluster{Name: "alpha"}
		for _, s := range cidrs {
			c.ServiceCIDRs = append(c.ServiceCIDRs, netip.MustParsePrefix(s))
		}
		d.clusters.handles = map[string]*clusterHandle{"alpha": {cfg: c}}
	}
	src := newStatusSource(d)
	setHandles("10.96.0.0/16")
	for range 2 {
		if _, err := src.explainer(); err != nil {
			t.Fatal(err)
		}
	}
	setHandles("10.96.0.0/16", "fd00:96::/108")
	if _, err := src.explainer(); err != nil {
		t.Fatal(err)
	}
	if want := [][]bool{{false}, {false, true}}; !reflect.DeepEqual(familiesSeen, want) {
		t.Errorf("explainers made for the families %v, want %v", familiesSeen, want)
	}
}

// inspected is a backend that lists its kernel objects and counts
// refusals, as ebpf mode's does.
type inspected struct {
	proxy.Backend
	dp  proxy.Datapath
	err error
	n   uint64
}

func (b inspected) Datapath(context.Context) (proxy.Datapath, error) { return b.dp, b.err }
func (b inspected) NoBackend(context.Context) (uint64, error)        { return b.n, b.err }

// TestStatusDatapath: status shows the datapath of a backend that lists
// one, and a failed read as a warning; the metric of refusals exists only
// with a backend that counts them.
func TestStatusDatapath(t *testing.T) {
	cfg := &config.Config{Mode: iptables.ModeName, MinSyncPeriod: time.Millisecond, SyncPeriod: time.Hour, FullSyncPeriod: time.Hour}
	plain := iptables.New(iptables.Options{Runner: iptables.NewFake()})
	d, err := New(cfg, slog.New(slog.DiscardHandler), plain)
	if err != nil {
		t.Fatal(err)
	}
	if r := newStatusSource(d).Status(); r.Datapath != nil {
		t.Errorf("a backend that lists nothing: datapath %+v", r.Datapath)
	}
	if n, err := testutil.GatherAndCount(d.metrics.Gatherer(), "kube_outpost_no_backend_total"); err != nil || n != 0 {
		t.Errorf("a backend that counts nothing: %d series, %v", n, err)
	}

	dp := proxy.Datapath{Programs: []proxy.AttachedProgram{{Hook: "connect4", ID: 7, Target: "/sys/fs/cgroup"}},
		Maps: []proxy.MapFill{{Name: "ko_svc4", Entries: 3, Capacity: 10}}}
	d, err = New(cfg, slog.New(slog.DiscardHandler), inspected{Backend: plain, dp: dp, n: 9})
	if err != nil {
		t.Fatal(err)
	}
	if r := newStatusSource(d).Status(); r.Datapath == nil || !reflect.DeepEqual(*r.Datapath, dp) {
		t.Errorf("datapath %+v, want %+v", r.Datapath, dp)
	}
	mfs, err := d.metrics.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "kube_outpost_no_backend_total" })
	if i < 0 || len(mfs[i].Metric) != 1 || mfs[i].Metric[0].GetCounter().GetValue() != 9 {
		t.Errorf("kube_outpost_no_backend_total: %v, want 9", mfs[max(i, 0)])
	}

	d, err = New(cfg, slog.New(slog.DiscardHandler), inspected{Backend: plain, err: errors.New("map gone")})
	if err != nil {
		t.Fatal(err)
	}
	r := newStatusSource(d).Status()
	if r.Datapath != nil || !slices.Contains(r.Warnings, "datapath not read: map gone") {
		t.Errorf("a failed read: datapath %+v, warnings %q", r.Datapath, r.Warnings)
	}
}
