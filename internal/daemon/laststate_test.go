package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/laststate"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
)

// logBuffer is a log that the watchers' goroutines write while the test
// reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stateDaemon is testDaemon keeping states in dir, with alpha configured
// through a kubeconfig whose apiserver refuses every connection: what
// alpha holds is what the test hands the store, as a watcher would.
func stateDaemon(t *testing.T, dir string, log *logBuffer) (*Daemon, *iptables.Fake) {
	t.Helper()
	d, fake := testDaemon(t)
	if log != nil {
		d.log = slog.New(slog.NewTextHandler(log, nil))
		d.clusters.log = d.log
	}
	d.cfg.StateDir, d.cfg.StaleStateMaxAge = dir, time.Hour
	d.writer = d.newStateWriter()
	d.host = &fakeHost{}
	d.lookupHost = func(context.Context, string) ([]netip.Addr, error) { return nil, nil }
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	// Nothing listens on port 1 of loopback.
	data := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n" +
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
	if err := os.WriteFile(kc, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cfg.Clusters = []config.Cluster{{Name: "alpha", Kubeconfig: kc, Server: "https://127.0.0.1:1", ContextName: "c",
		ServiceCIDRs: []netip.Prefix{alphaCIDR}}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d.clusters.setContext(ctx)
	return d, fake
}

func mustSync(t *testing.T, d *Daemon) {
	t.Helper()
	if err := d.loop.sync(t.Context(), syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
}

// TestBootWithoutAPIServer: a daemon saves what it synced; after a reboot
// (an empty kernel) a new daemon whose apiserver does not answer programs
// that state, is ready and says so; once the cluster syncs, the live state
// replaces it, and a service deleted meanwhile goes.
func TestBootWithoutAPIServer(t *testing.T) {
	dir := t.TempDir()
	d1, _ := stateDaemon(t, dir, nil)
	if err := d1.startClusters(); err != nil {
		t.Fatal(err)
	}
	d1.store.UpsertService("alpha", service("web", "10.96.0.10"))
	d1.store.UpsertSlice("alpha", slice("web", time.Now(), "10.0.0.1"))
	d1.store.UpsertService("alpha", service("gone", "10.96.0.11"))
	d1.store.UpsertSlice("alpha", slice("gone", time.Now(), "10.0.0.5"))
	d1.store.SetSynced("alpha")
	mustSync(t, d1)
	ctx, stop := context.WithCancel(t.Context())
	wait := d1.runStateWriter(ctx)
	stop()
	wait() // the stop saves what is due
	d1.clusters.stop()
	if saved := d1.writer.Saved("alpha"); saved.At.IsZero() || saved.Err != nil {
		t.Fatalf("alpha not saved at the stop: %+v", saved)
	}

	// The reboot: nothing in the kernel, alpha's apiserver down.
	var log logBuffer
	d2, kernel := stateDaemon(t, dir, &log)
	if err := d2.startClusters(); err != nil {
		t.Fatal(err)
	}
	defer d2.clusters.stop()
	mustSync(t, d2)
	rules := kernel.Dump()
	for _, want := range []string{"--to-destination 10.0.0.1:8080", "-d 10.96.0.10/32", "-d 10.96.0.11/32", "--to-destination 10.0.0.5:8080"} {
		if !strings.Contains(rules, want) {
			t.Errorf("the last known state is not programmed: no %q in\n%s", want, rules)
		}
	}
	r := newStatusSource(d2).Status()
	if c := r.Clusters[0]; c.Synced || c.LastKnownStateFrom.IsZero() || c.ServicePorts != 2 {
		t.Errorf("status %+v", c)
	}
	if !d2.health.Status().Ready {
		t.Error("not ready while every cluster serves its last known state")
	}
	if v := value(t, d2, "kube_outpost_cluster_stale_state", "cluster", "alpha"); v != 1 {
		t.Errorf("kube_outpost_cluster_stale_state %v, want 1", v)
	}
	if !strings.Contains(log.String(), "serving the cluster's last known state until it syncs") {
		t.Errorf("log:\n%s", log.String())
	}

	// The apiserver answers: web changed, gone was deleted meanwhile.
	d2.store.UpsertService("alpha", service("web", "10.96.0.10"))
	d2.store.UpsertSlice("alpha", slice("web", time.Now(), "10.0.0.2"))
	mustSync(t, d2)
	if !strings.Contains(kernel.Dump(), "--to-destination 10.0.0.1:8080") {
		t.Error("half a list replaced the last known state")
	}
	d2.store.SetSynced("alpha")
	mustSync(t, d2)
	rules = kernel.Dump()
	for _, gone := range []string{"10.0.0.1:8080", "10.96.0.11", "10.0.0.5"} {
		if strings.Contains(rules, gone) {
			t.Errorf("%s stays after the live state replaced the last known one:\n%s", gone, rules)
		}
	}
	if !strings.Contains(rules, "--to-destination 10.0.0.2:8080") {
		t.Errorf("the live state is not programmed:\n%s", rules)
	}
	if c := newStatusSource(d2).Status().Clusters[0]; !c.Synced || !c.LastKnownStateFrom.IsZero() {
		t.Errorf("status after the sync %+v", c)
	}
	if v := value(t, d2, "kube_outpost_cluster_stale_state", "cluster", "alpha"); v != 0 {
		t.Errorf("kube_outpost_cluster_stale_state %v after the sync, want 0", v)
	}
}

// TestBootWithUnusableState: a state that cannot be used is said in one
// line and nothing of it is served; so is a state when
// stale_state_max_age is 0s.
func TestBootWithUnusableState(t *testing.T) {
	dir := t.TempDir()
	d0, _ := stateDaemon(t, dir, nil)
	id := laststate.IdentityOf(d0.cfg.Clusters[0])
	id.ServiceCIDRs = []string{"10.97.0.0/16"} // another configuration of alpha
	st := laststate.State{Identity: id, SavedAt: time.Now()}
	if _, err := laststate.Save(filepath.Join(dir, laststate.Subdir), st); err != nil {
		t.Fatal(err)
	}
	var log logBuffer
	d, _ := stateDaemon(t, dir, &log)
	if err := d.startClusters(); err != nil {
		t.Fatal(err)
	}
	defer d.clusters.stop()
	if !d.store.LastKnownFrom("alpha").IsZero() {
		t.Error("a state of another configuration is served")
	}
	if n := strings.Count(log.String(), "not serving the cluster's last known state"); n != 1 || !strings.Contains(log.String(), "service_cidrs [10.97.0.0/16], configured now [10.96.0.0/16]") {
		t.Errorf("%d warnings, want 1 naming the difference:\n%s", n, log.String())
	}

	st.Identity = laststate.IdentityOf(d0.cfg.Clusters[0])
	if _, err := laststate.Save(filepath.Join(dir, laststate.Subdir), st); err != nil {
		t.Fatal(err)
	}
	off, _ := stateDaemon(t, dir, nil)
	off.cfg.StaleStateMaxAge = 0
	if err := off.startClusters(); err != nil {
		t.Fatal(err)
	}
	defer off.clusters.stop()
	if !off.store.LastKnownFrom("alpha").IsZero() {
		t.Error("stale_state_max_age 0s served a state")
	}
}
