//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-outpost/kube-outpost/internal/status"
)

// TestStatusAndExplain asks a running daemon with `kube-outpost status` and
// `kube-outpost explain` over its socket, as an operator would, and checks
// the answers against what the test made: counts and refusals per cluster,
// an apiserver outage, the endpoints a service balances over with their
// shares, those left out and why, and a difference between the model and
// the kernel once the test breaks the kernel's state.
func TestStatusAndExplain(t *testing.T) {
	alphaC := theLab.Cluster("alpha")
	alpha, beta := alphaC.Admin, theLab.Cluster("beta").Admin
	cfg := writeConfig(t)
	sock := configValue(t, cfg, "status_socket")
	ctx := context.Background()

	// Not running yet: a clear message and exit status 1.
	out, err := theLab.HostRun(ctx, binary, "status", "--socket", sock)
	if err == nil || !strings.Contains(out, "kube-outpost is not running (no socket at "+sock+")") {
		t.Fatalf("status without a daemon: %v\n%s", err, out)
	}

	d := startDaemon(t, cfg)
	outer := t
	ns := namespace(t, alpha, "explain")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2")), {ip: ip("a3")}, readyEP("224.1.1.2")})
	ext := service(t, alpha, ns, "ext", web, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.9"} })
	slice(t, alpha, ns, "ext", "1", web, []ep{readyEP(ip("a1"))})
	nsB := namespace(t, beta, "explain")
	vipB := service(t, beta, nsB, "empty", web)
	answeredBy(t, url(vip, 80), 30, "a1", "a2")
	answeredBy(t, url(ext, 80), 3, "a1")
	eventually(t, 20*time.Second, "beta's service refused", func() error { return refused(url(vipB, 80)) })

	t.Run("status", func(t *testing.T) {
		var rep status.Report
		eventually(t, 10*time.Second, "status shows the refusal", func() error {
			rep = statusJSON(t, sock)
			if c := clusterIn(rep, "alpha"); c == nil || !hasRefusal(c.Refused, ns, "ext", "externalIPs") {
				return fmt.Errorf("alpha's refusals: %+v", c)
			}
			return nil
		})
		if rep.Mode != mode || len(rep.Clusters) != 2 || rep.LastSuccess.At.IsZero() || rep.LastSync.Error != "" {
			t.Fatalf("status: %+v", rep)
		}
		a, b := clusterIn(rep, "alpha"), clusterIn(rep, "beta")
		if !a.Reachable || !a.Synced || !b.Reachable || !b.Synced || a.Server != "https://"+alphaC.APIServerIP.String()+":6443" {
			t.Fatalf("clusters: %+v %+v", a, b)
		}
		// alpha/explain/web: 2 ports over a1 and a2, ext: 2 ports over a1;
		// the other tests' services come and go, so at least these.
		if a.Services < 2 || a.ServicePorts < 4 || a.Endpoints < 6 || b.PortsWithoutEndpoints < 2 {
			t.Fatalf("counts: alpha %+v, beta %+v", a, b)
		}
		if !hasRefusal(a.Refused, ns, "web", "224.1.1.2") {
			t.Fatalf("alpha's refusals lack the multicast endpoint: %+v", a.Refused)
		}
		text, err := theLab.HostRun(ctx, binary, "status", "--socket", sock)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{mode + " mode", "alpha", "beta", ns + "/ext", "externalIPs"} {
			if !strings.Contains(text, want) {
				t.Errorf("status text lacks %q:\n%s", want, text)
			}
		}
		t.Logf("kube-outpost status:\n%s", text)
	})

	t.Run("explain", func(t *testing.T) {
		e := explainJSON(t, sock, "alpha/"+ns+"/web")
		if len(e.Ports) != 2 {
			t.Fatalf("explain: %d ports, want 2: %+v", len(e.Ports), e)
		}
		for _, p := range e.Ports {
			var got []string
			for _, ep := range p.Endpoints {
				got = append(got, ep.Addr.Addr().String())
				if !evenShare(ep, 2) {
					t.Errorf("%s: endpoint %v: probability %v weight %d", p.Key, ep.Addr, ep.Probability, ep.Weight)
				}
			}
			slices.Sort(got)
			if want := []string{ip("a1"), ip("a2")}; !slices.Equal(got, want) {
				t.Errorf("%s: endpoints %v, want %v", p.Key, got, want)
			}
			reasons := map[string]string{}
			for _, x := range p.Excluded {
				reasons[strings.Split(x.Addr, ":")[0]] = x.Reason
			}
			if reasons[ip("a3")] != "not-ready" || reasons["224.1.1.2"] != "unsafe-address" {
				t.Errorf("%s: excluded %+v, want a3 not-ready and 224.1.1.2 unsafe-address", p.Key, p.Excluded)
			}
			if len(p.Mismatches) != 0 || !p.InModel || !p.ClusterSynced {
				t.Errorf("%s: %+v", p.Key, p)
			}
			if p.Kernel.Mode != mode || p.Kernel.Empty || len(p.Kernel.Endpoints) != 2 || len(p.Kernel.Lines) == 0 {
				t.Errorf("%s: kernel view %+v", p.Key, p.Kernel)
			}
			checkKernelDetail(t, p, 2)
		}
		// By ClusterIP:port, and for a port without endpoints.
		byAddr := explainJSON(t, sock, netip.AddrPortFrom(vip, 80).String()+"/TCP")
		if len(byAddr.Ports) != 1 || byAddr.Ports[0].Key != e.Ports[0].Key && byAddr.Ports[0].Key != e.Ports[1].Key {
			t.Fatalf("explain %s:80: %+v", vip, byAddr)
		}
		empty := explainJSON(t, sock, "beta/"+nsB+"/empty")
		if len(empty.Ports) != 2 || empty.Ports[0].NoEndpointsReason == "" || len(empty.Ports[0].Mismatches) != 0 {
			t.Fatalf("explain beta/%s/empty: %+v", nsB, empty)
		}
		text, err := theLab.HostRun(ctx, binary, "explain", "--socket", sock, "alpha/"+ns+"/web")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, ip("a1")) || !strings.Contains(text, "not-ready") && !strings.Contains(text, "not ready") {
			t.Errorf("explain text:\n%s", text)
		}
		t.Logf("kube-outpost explain alpha/%s/web:\n%s", ns, text)
	})

	t.Run("a broken kernel state shows as a mismatch", func(t *testing.T) {
		e := explainJSON(t, sock, netip.AddrPortFrom(vip, 80).String()+"/TCP")
		p := e.Ports[0]
		breakPort(t, p, vip)
		broken := explainJSON(t, sock, netip.AddrPortFrom(vip, 80).String()+"/TCP").Ports[0]
		if len(broken.Mismatches) == 0 {
			t.Fatalf("the kernel's state was broken, but explain finds model and kernel agree: %+v", broken)
		}
		t.Logf("mismatches: %v", broken.Mismatches)
		// A full sync repairs it (SIGHUP does not force one; a restart does).
		d.stop()
		startDaemon(outer, cfg)
		eventually(t, 20*time.Second, "repaired after a restart", func() error {
			e, err := explain(sock, netip.AddrPortFrom(vip, 80).String()+"/TCP")
			if err != nil {
				return err
			}
			if m := e.Ports[0].Mismatches; len(m) != 0 {
				return fmt.Errorf("mismatches: %v", m)
			}
			return nil
		})
	})

	t.Run("an apiserver outage", func(t *testing.T) {
		if err := alphaC.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := alphaC.StartAPIServer(context.Background()); err != nil {
				t.Fatal(err)
			}
		}()
		eventually(t, 60*time.Second, "alpha unreachable in status", func() error {
			a := clusterIn(statusJSON(t, sock), "alpha")
			if a.Reachable || a.LastError == "" {
				return fmt.Errorf("alpha: %+v", a)
			}
			return nil
		})
		// Its rules stay, and status still counts them.
		rep := statusJSON(t, sock)
		if a := clusterIn(rep, "alpha"); a.Services < 2 {
			t.Fatalf("alpha during the outage: %+v", a)
		}
		answeredBy(t, url(vip, 80), 10, "a1", "a2")
	})
}

func configValue(t *testing.T, path, key string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + key + ` = "([^"]*)"`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s: no %s", path, key)
	}
	return string(m[1])
}

func statusJSON(t *testing.T, sock string) status.Report {
	t.Helper()
	out, err := theLab.HostCommand(context.Background(), binary, "status", "--socket", sock, "--output", "json").Output()
	if err != nil {
		t.Fatalf("kube-outpost status: %v\n%s", err, out)
	}
	var r status.Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("status --output json: %v\n%s", err, out)
	}
	return r
}

func explainJSON(t *testing.T, sock, query string) status.Explanation {
	t.Helper()
	e, err := explain(sock, query)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func explain(sock, query string) (status.Explanation, error) {
	var e status.Explanation
	cmd := theLab.HostCommand(context.Background(), binary, "explain", "--socket", sock, "--output", "json", query)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return e, fmt.Errorf("kube-outpost explain %s: %v\n%s%s", query, err, out, stderr.String())
	}
	if err := json.Unmarshal(out, &e); err != nil {
		return e, fmt.Errorf("explain --output json: %v\n%s", err, out)
	}
	if len(e.Ports) == 0 {
		return e, fmt.Errorf("explain %s: no ports", query)
	}
	return e, nil
}

// kernelDetail decodes a port's kernel.detail as the mode's view, as a
// script that knows the mode would.
func kernelDetail[T any](t *testing.T, p status.PortExplanation) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(p.Kernel.Detail, &v); err != nil {
		t.Fatalf("%s: kernel detail %s: %v", p.Key, p.Kernel.Detail, err)
	}
	return v
}

func clusterIn(r status.Report, name string) *status.ClusterStatus {
	for i := range r.Clusters {
		if r.Clusters[i].Name == name {
			return &r.Clusters[i]
		}
	}
	return nil
}

func hasRefusal(rs []status.Refusal, ns, name, reason string) bool {
	for _, r := range rs {
		if r.Namespace == ns && r.Name == name && strings.Contains(r.Reason, reason) {
			return true
		}
	}
	return false
}
