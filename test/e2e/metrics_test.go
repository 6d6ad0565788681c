//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The observed daemon serves metrics on the default address, loopback of
// the host namespace, and health on the host's lab address, as a load
// balancer on the network would probe it.
const (
	metricsAddr = "127.0.0.1:10249"
	healthzPort = 10256
)

// observed is a daemon whose syncs can be made to fail, in a mode that
// syncs through a command.
type observed struct {
	*daemon
	failFlag string // while this file exists, the mode's syncTool exits 1; "" without one
	http     *http.Client
	healthz  string // base URL of the health endpoints
	sock     string // its status socket
}

// startObserved runs kube-outpost for both clusters with a short
// sync_period, so that the health check's window (twice it) is short, and,
// in a mode that syncs through a command, with a PATH whose syncTool
// (iptables-restore, nft -f or ipset restore) fails on demand. extra are
// more top-level keys for its config.
func startObserved(t *testing.T, extra ...string) *observed {
	t.Helper()
	dir := t.TempDir()
	if can(t, config.CanSyncByCommand) != (syncTool.name != "") {
		t.Fatalf("mode %s: can do %s is %v, but syncTool is %+v", mode, config.CanSyncByCommand, can(t, config.CanSyncByCommand), syncTool)
	}
	o := &observed{
		http: &http.Client{
			Transport: &http.Transport{DialContext: theLab.DialHost, DisableKeepAlives: true, Proxy: nil},
			Timeout:   5 * time.Second,
		},
		healthz: "http://" + netip.AddrPortFrom(theLab.HostIP, healthzPort).String(),
	}

	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if syncTool.name != "" {
		o.failFlag = filepath.Join(dir, "fail-"+syncTool.name)
		real, err := exec.LookPath(syncTool.name)
		if err != nil {
			t.Fatal(err)
		}
		when := fmt.Sprintf("[ -e %q ]", o.failFlag)
		if syncTool.sub != "" {
			when += fmt.Sprintf(" && [ \"$1\" = %q ]", syncTool.sub)
		}
		wrapper := fmt.Sprintf("#!/bin/sh\nif %s; then\n  echo '%s: made to fail by the e2e test' >&2\n  exit 1\nfi\nexec %q \"$@\"\n", when, syncTool.name, real)
		if err := os.WriteFile(filepath.Join(bin, syncTool.name), []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// writeConfig's file, with our settings instead of any it has.
	cfgPath := writeConfig(t)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ours := append([]string{
		`sync_period = "2s"`,
		fmt.Sprintf(`healthz_address = %q`, netip.AddrPortFrom(theLab.HostIP, healthzPort)),
	}, extra...)
	var kept []string
	for _, l := range strings.Split(string(data), "\n") {
		key, _, _ := strings.Cut(l, "=")
		if key = strings.TrimSpace(key); key == "sync_period" || key == "healthz_address" || key == "metrics_address" {
			continue
		}
		kept = append(kept, l)
	}
	// Top-level keys go before the first [[clusters]]: first in the file.
	if err := os.WriteFile(cfgPath, []byte(strings.Join(append(ours, kept...), "\n")), 0o600); err != nil {
		t.Fatal(err)
	}

	withHostKeys(t, cfgPath)
	o.sock = configValue(t, cfgPath, "status_socket")
	if out, err := theLab.HostRun(context.Background(), binary, "prepare", "--config", cfgPath); err != nil {
		t.Fatalf("kube-outpost prepare: %v\n%s", err, out)
	}
	d := &daemon{t: t, log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = theLab.HostCommand(context.Background(), binary, "run", "--config", cfgPath, "--log-level", "debug")
	// `ip netns exec` keeps the environment, so the daemon finds the
	// wrapper first.
	d.cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		if o.failFlag != "" {
			os.Remove(o.failFlag)
		}
		d.stop()
		if t.Failed() {
			t.Logf("kube-outpost log:\n%s", d.log.String())
		}
	})
	o.daemon = d
	return o
}

func (o *observed) get(url string) (int, string, error) {
	resp, err := o.http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// scrape returns the metrics as text.
func (o *observed) scrape() (samples, error) {
	code, body, err := o.get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d: %s", code, body)
	}
	return parseSamples(body)
}

// status returns the code of a health endpoint.
func (o *observed) status(path string) (int, string) {
	code, body, err := o.get(o.healthz + path)
	if err != nil {
		return 0, err.Error()
	}
	return code, body
}

// samples are a scrape's series, by name and then labels written as
// `a="x",b="y"` (sorted, as the exposition writes them).
type samples map[string]map[string]float64

func parseSamples(text string) (samples, error) {
	s, err := lab.ParseMetrics(text)
	return samples(s), err
}

// get returns a series' value, and whether it exists.
func (s samples) get(name, labels string) (float64, bool) {
	v, ok := s[name][labels]
	return v, ok
}

// value is get with absent series as 0, as counters that never counted.
func (s samples) value(name, labels string) float64 {
	v, _ := s.get(name, labels)
	return v
}

// want checks series against values; the first mismatch is the error.
func (s samples) want(series map[string]float64) error {
	for key, w := range series {
		name, labels, _ := strings.Cut(key, "|")
		if v, ok := s.get(name, labels); !ok || v != w {
			return fmt.Errorf("%s{%s} = %v (present: %v), want %v", name, labels, v, ok, w)
		}
	}
	return nil
}

// triggeredSlice writes an EndpointSlice as the EndpointSlice controller
// would after a change at `at`: with the last-change-trigger-time
// annotation, from which kube-outpost measures network programming latency.
func triggeredSlice(t *testing.T, c kubernetes.Interface, ns, svc string, ports []port, eps []ep, at time.Time) {
	t.Helper()
	slice(t, c, ns, svc, "1", ports, eps, func(es *discoveryv1.EndpointSlice) {
		es.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: at.UTC().Format(time.RFC3339Nano)}
	})
}

// TestMetrics scrapes a running daemon as Prometheus would, and probes its
// health as a load balancer would, while the clusters change, objects are
// refused, the mode's sync command fails, and an apiserver goes away.
func TestMetrics(t *testing.T) {
	alphaC, betaC := theLab.Cluster("alpha"), theLab.Cluster("beta")
	alpha := alphaC.Admin
	o := startObserved(t)
	var s samples
	scrape := func() error {
		var err error
		s, err = o.scrape()
		return err
	}

	eventually(t, 60*time.Second, "both clusters up and synced, the daemon ready", func() error {
		if err := scrape(); err != nil {
			return err
		}
		if err := s.want(map[string]float64{
			`kube_outpost_cluster_up|cluster="alpha"`:                           1,
			`kube_outpost_cluster_up|cluster="beta"`:                            1,
			`kube_outpost_cluster_synced|cluster="alpha"`:                       1,
			`kube_outpost_cluster_synced|cluster="beta"`:                        1,
			`kube_outpost_watch_errors_total|cluster="alpha"`:                   0,
			`kube_outpost_watch_restarts_total|cluster="alpha",reason="silent"`: 0,
			`kube_outpost_build_info|mode="` + mode + `",version="dev"`:         1,
		}); err != nil {
			return err
		}
		if _, ok := s.get("kube_outpost_services_programmed", `cluster="alpha"`); !ok {
			return errors.New("no services_programmed for alpha yet")
		}
		if code, body := o.status("/readyz"); code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := s.get(name, ""); !ok {
			t.Errorf("no %s: the runtime and process collectors are missing", name)
		}
	}
	if code, body := o.status("/healthz"); code != http.StatusOK || !strings.Contains(body, `"healthy":true`) {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	ns := namespace(t, alpha, "metrics")
	http1 := []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080}}

	t.Run("a service with two endpoints is counted, and its latency measured", func(t *testing.T) {
		// Other tests' services stay in the lab: count from here.
		base := s
		vip := service(t, alpha, ns, "web", http1)
		triggeredSlice(t, alpha, ns, "web", http1, []ep{readyEP(ip("a1")), readyEP(ip("a2"))}, time.Now())
		answeredBy(t, url(vip, 80), 20, "a1", "a2")
		eventually(t, 20*time.Second, "the service counted", func() error {
			if err := scrape(); err != nil {
				return err
			}
			return s.want(map[string]float64{
				`kube_outpost_services_programmed|cluster="alpha"`:  base.value("kube_outpost_services_programmed", `cluster="alpha"`) + 1,
				`kube_outpost_endpoints_programmed|cluster="alpha"`: base.value("kube_outpost_endpoints_programmed", `cluster="alpha"`) + 2,
				`kube_outpost_service_ports_programmed|`:            base.value("kube_outpost_service_ports_programmed", "") + 1,
			})
		})
		for _, name := range []string{"kube_outpost_sync_proxy_rules_duration_seconds_count", "kube_outpost_network_programming_duration_seconds_count"} {
			if s.value(name, "") <= base.value(name, "") {
				t.Errorf("%s did not grow: %v, then %v", name, base.value(name, ""), s.value(name, ""))
			}
		}
		if s.value("kube_outpost_sync_proxy_rules_last_timestamp_seconds", "") <= base.value("kube_outpost_sync_proxy_rules_last_timestamp_seconds", "") {
			t.Error("the last sync time did not move")
		}

		// An endpoint goes: one more latency, one endpoint less.
		base = s
		triggeredSlice(t, alpha, ns, "web", http1, []ep{readyEP(ip("a2"))}, time.Now())
		answeredBy(t, url(vip, 80), 10, "a2")
		eventually(t, 20*time.Second, "the endpoint change measured", func() error {
			if err := scrape(); err != nil {
				return err
			}
			if err := s.want(map[string]float64{
				`kube_outpost_endpoints_programmed|cluster="alpha"`: base.value("kube_outpost_endpoints_programmed", `cluster="alpha"`) - 1,
			}); err != nil {
				return err
			}
			const n = "kube_outpost_network_programming_duration_seconds_count"
			if s.value(n, "") <= base.value(n, "") {
				return fmt.Errorf("%s still %v", n, s.value(n, ""))
			}
			return nil
		})
	})

	t.Run("refused objects are counted by reason", func(t *testing.T) {
		base := s
		ext := `kube_outpost_services_refused_total|cluster="alpha",reason="external_ips"`
		unsafe := `kube_outpost_services_refused_total|cluster="alpha",reason="unsafe_endpoint"`
		extName, unsafeName := strings.Split(ext, "|"), strings.Split(unsafe, "|")
		service(t, alpha, ns, "ext", http1, func(svc *corev1.Service) { svc.Spec.ExternalIPs = []string{"203.0.113.7"} })
		service(t, alpha, ns, "bad", http1)
		slice(t, alpha, ns, "bad", "1", http1, []ep{readyEP("224.1.1.1")})
		eventually(t, 20*time.Second, "refusals counted", func() error {
			if err := scrape(); err != nil {
				return err
			}
			return s.want(map[string]float64{
				ext:    base.value(extName[0], extName[1]) + 1,
				unsafe: base.value(unsafeName[0], unsafeName[1]) + 1,
			})
		})
	})

	t.Run("failing syncs keep the last rules, back off, and recover with a full sync", func(t *testing.T) {
		// Made to fail through the command a sync runs: a mode that
		// writes the kernel with its own system calls (ebpf mode's
		// bpf()) has nothing to fail on demand short of filling its
		// maps, which the next full sync would empty again.
		needs(t, config.CanSyncByCommand)
		// web (the first subtest's) is answered by a2 alone. While every
		// sync fails, a new service flip and a move of web to a1 wait;
		// web stays at a2.
		const (
			errs     = "kube_outpost_sync_proxy_rules_errors_total"
			failures = "kube_outpost_sync_proxy_rules_restore_failures_total"
			fulls    = "kube_outpost_sync_full_proxy_rules_duration_seconds_count"
		)
		got, err := alpha.CoreV1().Services(ns).Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		webURL := url(netip.MustParseAddr(got.Spec.ClusterIP), 80)
		answeredBy(t, webURL, 5, "a2")
		if err := scrape(); err != nil {
			t.Fatal(err)
		}
		base := s
		const failed = `msg="sync failed; the previous rules stay in force`
		before := len(o.times(failed))
		if err := os.WriteFile(o.failFlag, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		failing := time.Now()
		vip := service(t, alpha, ns, "flip", http1)
		slice(t, alpha, ns, "flip", "1", http1, []ep{readyEP(ip("a3"))})
		slice(t, alpha, ns, "web", "1", http1, []ep{readyEP(ip("a1"))})
		eventually(t, 30*time.Second, "/healthz failing", func() error {
			if code, body := o.status("/healthz"); code != http.StatusServiceUnavailable {
				return fmt.Errorf("/healthz: %d %s", code, body)
			}
			return nil
		})
		_, unhealthy := o.status("/healthz")
		if code, body := o.status("/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz while unhealthy: %d %s", code, body)
		}
		// The last rules serve: web at a2, the change to a1 not applied,
		// flip not there.
		answeredBy(t, webURL, 10, "a2")
		if body, err := get(url(vip, 80)); err == nil {
			t.Errorf("flip answered (%q) while every sync fails", body)
		}
		// Retries back off: from min_sync_period (200 ms) doubling to
		// sync_period (2 s), nothing else asking for a sync meanwhile.
		if wait := 8*time.Second - time.Since(failing); wait > 0 {
			time.Sleep(wait)
		}
		if err := scrape(); err != nil {
			t.Fatal(err)
		}
		at := o.times(failed)[before:]
		var gaps []time.Duration
		for i := 1; i < len(at); i++ {
			gaps = append(gaps, at[i].Sub(at[i-1]).Round(10*time.Millisecond))
		}
		t.Logf("%d failed syncs in %s, %v apart", len(at), time.Since(failing).Round(100*time.Millisecond), gaps)
		if len(gaps) < 3 || gaps[0] > time.Second || slices.Max(gaps) < 1500*time.Millisecond || len(at) > int(time.Since(failing)/(2*time.Second))+5 {
			t.Errorf("failed syncs %v apart: want a backoff growing from about 200 ms to 2 s", gaps)
		}
		if got, want := s.value(errs, ""), base.value(errs, "")+float64(len(at)); got < want {
			t.Errorf("%s = %v, want at least %v (%d failed syncs seen in the log)", errs, got, want, len(at))
		}
		if syncTool.counted && s.value(failures, "") <= base.value(failures, "") {
			t.Errorf("%s did not grow: %v, then %v", failures, base.value(failures, ""), s.value(failures, ""))
		}
		if n := o.count(`made to fail by the e2e test`); n == 0 {
			t.Errorf("the daemon never logged the failing %s", syncTool.name)
		}

		// Syncs work again: the next one is full, and applies both
		// changes.
		if err := os.Remove(o.failFlag); err != nil {
			t.Fatal(err)
		}
		recovered := time.Now()
		answeredBy(t, url(vip, 80), 5, "a3")
		answeredBy(t, webURL, 10, "a1")
		t.Logf("both changes made during the failure answered %s after syncs worked again", time.Since(recovered).Round(100*time.Millisecond))
		eventually(t, 30*time.Second, "/healthz recovered", func() error {
			for _, p := range []string{"/healthz", "/livez", "/readyz"} {
				if code, body := o.status(p); code != http.StatusOK {
					return fmt.Errorf("%s: %d %s", p, code, body)
				}
			}
			return nil
		})
		// The failed attempts after the first were full syncs; so is the
		// one that worked: one full for each failure.
		if err := scrape(); err != nil {
			t.Fatal(err)
		}
		n := len(o.times(failed)) - before
		if got, want := s.value(fulls, ""), base.value(fulls, "")+float64(n); got < want {
			t.Errorf("%s = %v, want at least %v: the sync after the failures was not full", fulls, got, want)
		}
		if testing.Verbose() {
			t.Logf("GET /healthz while syncs failed:\n%s", unhealthy)
		}
	})

	t.Run("cluster_up follows the apiserver", func(t *testing.T) {
		const watchErrors = "kube_outpost_watch_errors_total"
		base := s
		if err := betaC.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		restarted := false
		defer func() {
			if !restarted {
				betaC.StartAPIServer(context.Background())
			}
		}()
		eventually(t, 60*time.Second, "beta down", func() error {
			if err := scrape(); err != nil {
				return err
			}
			return s.want(map[string]float64{
				`kube_outpost_cluster_up|cluster="beta"`:     0,
				`kube_outpost_cluster_synced|cluster="beta"`: 1, // its rules stay
				`kube_outpost_cluster_up|cluster="alpha"`:    1,
			})
		})
		if s.value(watchErrors, `cluster="beta"`) <= base.value(watchErrors, `cluster="beta"`) {
			t.Errorf("%s{beta} did not grow with its apiserver down: %v", watchErrors, s.value(watchErrors, `cluster="beta"`))
		}
		if code, body := o.status("/healthz"); code != http.StatusOK {
			t.Errorf("/healthz with an apiserver down (its rules stay in force): %d %s", code, body)
		}
		if err := betaC.StartAPIServer(context.Background()); err != nil {
			t.Fatal(err)
		}
		restarted = true
		eventually(t, 120*time.Second, "beta up again", func() error {
			if err := scrape(); err != nil {
				return err
			}
			return s.want(map[string]float64{`kube_outpost_cluster_up|cluster="beta"`: 1})
		})
	})

	// What an operator sees, for the documentation: run with -v.
	if testing.Verbose() {
		ctx := context.Background()
		if out, err := theLab.HostRun(ctx, "sh", "-c", "curl -s "+metricsAddr+"/metrics | grep kube_outpost_"); err == nil {
			t.Logf("curl -s %s/metrics | grep kube_outpost_\n%s", metricsAddr, out)
		}
		for _, p := range []string{"/healthz", "/readyz"} {
			if out, err := theLab.HostRun(ctx, "curl", "-si", o.healthz+p); err == nil {
				t.Logf("curl -si %s%s\n%s", o.healthz, p, out)
			}
		}
	}
}
