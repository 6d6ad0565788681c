package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/syncrunner"
)

var alphaCIDR = netip.MustParsePrefix("10.96.0.0/16")

// testDaemon is a daemon over the real iptables backend on a Fake runner,
// without listeners: the tests drive its store and its sync by hand.
func testDaemon(t *testing.T) (*Daemon, *iptables.Fake) {
	t.Helper()
	fake := iptables.NewFake()
	cfg := &config.Config{
		Mode: iptables.ModeName, MinSyncPeriod: time.Millisecond, SyncPeriod: time.Hour, FullSyncPeriod: time.Hour,
	}
	d, err := New(cfg, slog.New(slog.DiscardHandler), iptables.New(iptables.Options{Runner: fake}))
	if err != nil {
		t.Fatal(err)
	}
	d.started = time.Now()
	d.loop.started = d.started
	return d, fake
}

func service(name, ip string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// slice is the EndpointSlice of a service, changed at trigger by the
// EndpointSlice controller's account.
func slice(svc string, trigger time.Time, ips ...string) *discoveryv1.EndpointSlice {
	port, proto := int32(8080), corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: svc + "-1",
			Labels:      map[string]string{discoveryv1.LabelServiceName: svc},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger.Format(time.RFC3339Nano)},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}},
	}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
	}
	return es
}

func value(t *testing.T, d *Daemon, name string, labels ...string) float64 {
	t.Helper()
	return metricValue(t, d.metrics, name, labels...)
}

// metricValue is the value of the series of name with labels, a
// histogram's count, or -1 when there is none.
func metricValue(t *testing.T, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return -1 // absent
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// TestSyncObserved follows syncs through the metrics and the health
// checks: counts from the programmed state, full and partial syncs,
// failures, and latencies measured only once a change is programmed.
func TestSyncObserved(t *testing.T) {
	d, fake := testDaemon(t)
	ctx := context.Background()
	check := func(what string, want map[string]float64) {
		t.Helper()
		for key, w := range want {
			parts := strings.Split(key, "|")
			var labels []string
			for _, l := range parts[1:] {
				k, v, _ := strings.Cut(l, "=")
				labels = append(labels, k, v)
			}
			name := parts[0]
			if got := value(t, d, name, labels...); got != w {
				t.Errorf("%s: %s = %v, want %v", what, key, got, w)
			}
		}
	}

	d.store.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "alpha", ServiceCIDRs: []netip.Prefix{alphaCIDR}}, Generation: 1}})
	d.store.SetSynced("alpha")
	d.store.UpsertService("alpha", service("web", "10.96.0.10"))
	d.store.UpsertSlice("alpha", slice("web", time.Now(), "10.1.0.1", "10.1.0.2"))
	// A refused service: one refusal, whatever the number of syncs.
	ext := service("ext", "10.96.0.11")
	ext.Spec.ExternalIPs = []string{"203.0.113.7"}
	d.store.UpsertService("alpha", ext)
	if st := d.health.Status(); st.PendingSince == nil {
		t.Fatalf("changes were not queued for the health check: %+v", st)
	}

	if err := d.loop.sync(ctx, syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
	check("first sync", map[string]float64{
		"kube_outpost_services_programmed|cluster=alpha":                        2,
		"kube_outpost_endpoints_programmed|cluster=alpha":                       2,
		"kube_outpost_service_ports_programmed":                                 2,
		"kube_outpost_sync_proxy_rules_duration_seconds":                        1,
		"kube_outpost_sync_full_proxy_rules_duration_seconds":                   1,
		"kube_outpost_sync_partial_proxy_rules_duration_seconds":                0,
		"kube_outpost_network_programming_duration_seconds":                     1,
		"kube_outpost_services_refused_total|cluster=alpha|reason=external_ips": 1,
		"kube_outpost_sync_proxy_rules_restore_failures_total":                  0,
	})
	if st := d.health.Status(); !st.Healthy || !st.Ready || st.PendingSince != nil {
		t.Errorf("after the first sync, with alpha synced: %+v, want healthy and ready", st)
	}

	// iptables-restore fails: the change is not programmed, so its latency
	// is not observed yet, and the counts stay those of the rules in force.
	d.store.UpsertSlice("alpha", slice("web", time.Now(), "10.1.0.1"))
	fake.FailNext = &iptables.RestoreError{Output: "iptables-restore: line 3 failed", Err: errors.New("exit status 1")}
	if err := d.loop.sync(ctx, syncrunner.Run{}); err == nil {
		t.Fatal("sync succeeded although iptables-restore failed")
	}
	check("failed sync", map[string]float64{
		"kube_outpost_endpoints_programmed|cluster=alpha":                       2,
		"kube_outpost_network_programming_duration_seconds":                     1,
		"kube_outpost_sync_proxy_rules_restore_failures_total":                  1,
		"kube_outpost_sync_proxy_rules_errors_total":                            1,
		"kube_outpost_sync_partial_proxy_rules_duration_seconds":                1,
		"kube_outpost_services_refused_total|cluster=alpha|reason=external_ips": 1,
	})
	if st := d.health.Status(); st.PendingSince == nil {
		t.Errorf("after a failed sync: %+v, want the change still pending", st)
	}

	// A failure that is not iptables-restore's (here: a lock timeout) is
	// a sync error, not a restore failure.
	fake.FailNext = errors.New("another app is currently holding the xtables lock")
	if err := d.loop.sync(ctx, syncrunner.Run{}); err == nil {
		t.Fatal("sync succeeded although the runner failed")
	}
	check("second failed sync", map[string]float64{
		"kube_outpost_sync_proxy_rules_restore_failures_total": 1,
		"kube_outpost_sync_proxy_rules_errors_total":           2,
	})

	// The retry programs the change. It is a full sync, as is any after
	// a failure: the second failed one was too.
	if err := d.loop.sync(ctx, syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
	check("retry", map[string]float64{
		"kube_outpost_endpoints_programmed|cluster=alpha":        1,
		"kube_outpost_network_programming_duration_seconds":      2,
		"kube_outpost_sync_full_proxy_rules_duration_seconds":    3,
		"kube_outpost_sync_partial_proxy_rules_duration_seconds": 1,
	})
	if st := d.health.Status(); !st.Healthy || st.PendingSince != nil {
		t.Errorf("after the retry: %+v, want healthy with nothing pending", st)
	}

	// Nothing changed: a partial sync, with nothing to measure.
	if err := d.loop.sync(ctx, syncrunner.Run{}); err != nil {
		t.Fatal(err)
	}
	check("idle sync", map[string]float64{
		"kube_outpost_sync_partial_proxy_rules_duration_seconds": 2,
		"kube_outpost_network_programming_duration_seconds":      2,
	})

	// The runner's periodic run is a full sync, queued as a change is:
	// one that fails keeps the health checks waiting.
	fake.FailNext = errors.New("another app is currently holding the xtables lock")
	if err := d.loop.sync(ctx, syncrunner.Run{Periodic: true}); err == nil {
		t.Fatal("sync succeeded although the runner failed")
	}
	if st := d.health.Status(); st.PendingSince == nil {
		t.Errorf("after a failed periodic sync: %+v, want it pending", st)
	}
	if err := d.loop.sync(ctx, syncrunner.Run{Periodic: true}); err != nil {
		t.Fatal(err)
	}
	check("periodic syncs", map[string]float64{
		"kube_outpost_sync_full_proxy_rules_duration_seconds":    5,
		"kube_outpost_sync_partial_proxy_rules_duration_seconds": 2,
	})
	if st := d.health.Status(); !st.Healthy || st.PendingSince != nil {
		t.Errorf("after a periodic sync: %+v, want healthy with nothing pending", st)
	}
}

// TestClusterSeries: a cluster's watch series exist while it is
// configured, and go with a reload that drops it.
func TestClusterSeries(t *testing.T) {
	d, _ := testDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.clusters.setContext(ctx)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	// An apiserver that refuses connections at once: nothing listens on
	// port 1 of loopback.
	data := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n" +
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
	if err := os.WriteFile(kc, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := func(name, cidr string) config.Cluster {
		return config.Cluster{Name: name, Kubeconfig: kc, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(cidr)}}
	}
	if err := d.setClusters([]config.Cluster{cl("alpha", "10.96.0.0/16"), cl("beta", "10.97.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	defer d.clusters.stop()
	for _, c := range []string{"alpha", "beta"} {
		if up, synced := value(t, d, "kube_outpost_cluster_up", "cluster", c), value(t, d, "kube_outpost_cluster_synced", "cluster", c); up != 0 || synced != 0 {
			t.Errorf("%s, unreachable: up %v, synced %v, want 0 and 0", c, up, synced)
		}
	}
	if err := d.setClusters([]config.Cluster{cl("alpha", "10.96.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		"kube_outpost_cluster_up": 1, "kube_outpost_cluster_synced": 1, "kube_outpost_watch_errors_total": 1,
		// One per reason, from the start.
		"kube_outpost_watch_restarts_total": len(cluster.RestartReasons),
	} {
		if n, err := testutil.GatherAndCount(d.metrics.Gatherer(), name); err != nil || n != want {
			t.Errorf("%s: %d series (%v) after beta was dropped, want alpha's %d", name, n, err, want)
		}
		if v := value(t, d, name, "cluster", "beta"); v != -1 {
			t.Errorf("%s{cluster=beta} = %v after beta was dropped", name, v)
		}
	}
}
