package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/health"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestServe checks which endpoints each listener serves, apart and shared.
func TestServe(t *testing.T) {
	for _, tt := range []struct {
		name             string
		metrics, healthz string
		listeners        int
		profiling        bool
	}{
		{"apart", "127.0.0.1:0", "127.0.0.2:0", 2, false},
		{"shared", "127.0.0.1:0", "127.0.0.1:0", 1, false},
		{"metrics only", "127.0.0.1:0", "", 1, false},
		{"none", "", "", 0, false},
		{"profiling", "127.0.0.1:0", "127.0.0.2:0", 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := testDaemon(t)
			parse := func(s string) netip.AddrPort {
				if s == "" {
					return netip.AddrPort{}
				}
				return netip.MustParseAddrPort(s)
			}
			d.cfg.MetricsAddress, d.cfg.HealthzAddress = parse(tt.metrics), parse(tt.healthz)
			d.cfg.Profiling = tt.profiling
			servers, err := d.listen()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			d.serve(ctx, servers)
			if len(servers) != tt.listeners {
				t.Fatalf("%d listeners, want %d", len(servers), tt.listeners)
			}
			for _, s := range servers {
				base := "http://" + s.ln.Addr().String()
				serves := func(path string) bool {
					code, _ := get(t, base+path)
					return code != http.StatusNotFound
				}
				isMetrics := strings.Contains(strings.Join(s.keys, ","), "metrics_address")
				isHealth := strings.Contains(strings.Join(s.keys, ","), "healthz_address")
				if serves("/metrics") != isMetrics {
					t.Errorf("%s (%v): /metrics served: %v", base, s.keys, !isMetrics)
				}
				for _, p := range []string{"/healthz", "/livez", "/readyz"} {
					if serves(p) != isHealth {
						t.Errorf("%s (%v): %s served: %v", base, s.keys, p, !isHealth)
					}
				}
				if isHealth {
					// Before the first sync: alive, not ready.
					if code, body := get(t, base+"/healthz"); code != 200 {
						t.Errorf("/healthz before the first sync: %d %s", code, body)
					}
					code, body := get(t, base+"/readyz")
					var st health.Status
					if err := json.Unmarshal([]byte(body), &st); err != nil || code != 503 || st.Ready {
						t.Errorf("/readyz before the first sync: %d %s (%v)", code, body, err)
					}
				}
				if isMetrics {
					if _, body := get(t, base+"/metrics"); !strings.Contains(body, `kube_outpost_build_info{mode="iptables",version="dev"} 1`) {
						t.Errorf("/metrics lacks the build info:\n%s", body)
					}
				}
				// The profiles only where asked for, and only beside /metrics.
				for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
					if want := isMetrics && tt.profiling; serves(p) != want {
						t.Errorf("%s (%v): %s served: %v, profiling %v", base, s.keys, p, !want, tt.profiling)
					}
				}
			}
		})
	}
}

// TestRunPortTaken: a taken port stops Run before anything else starts,
// with the key named.
func TestRunPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, fake := testDaemon(t)
	d.cfg.HealthzAddress = netip.MustParseAddrPort(ln.Addr().String())
	d.cfg.MetricsAddress = netip.MustParseAddrPort("127.0.0.1:0")
	err = d.Run(context.Background())
	want := fmt.Sprintf("cannot serve healthz_address %s", ln.Addr())
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run: %v, want an error starting with %q", err, want)
	}
	if fake.Restores != 0 {
		t.Errorf("a refused start ran iptables-restore %d times", fake.Restores)
	}
}
