//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestBootWithoutAPIServer: a host that boots while its apiserver is down
// still serves (issue 13, guarantee 2). A daemon syncs alpha and saves its
// state when it stops; the reboot takes every kernel object of ours, and
// alpha's apiserver is down when the new daemon starts: the ClusterIPs
// answer from the saved state, status says so, and the daemon is ready.
// Once the apiserver answers, the live state replaces the saved one: a
// service deleted meanwhile goes, and a changed endpoint is applied.
func TestBootWithoutAPIServer(t *testing.T) {
	alphaC := theLab.Cluster("alpha")
	alpha := alphaC.Admin
	ctx := context.Background()
	cfg := writeConfig(t, "alpha")
	sock := configValue(t, cfg, "status_socket")
	d := startDaemon(t, cfg)

	ns := namespace(t, alpha, "boot")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
	gone := service(t, alpha, ns, "gone", web)
	slice(t, alpha, ns, "gone", "1", web, []ep{readyEP(ip("a2"))})
	answeredBy(t, url(vip, 80), 3, "a1")
	answeredBy(t, url(gone, 80), 3, "a2")

	// The stop saves alpha's state; gone is deleted while no daemon runs,
	// so the saved state still has it.
	d.stop()
	saved := filepath.Join(configValue(t, cfg, "state_dir"), "last-known", "alpha.json")
	if _, err := os.Stat(saved); err != nil {
		t.Fatalf("no saved state after the stop: %v\n%s", err, d.log.String())
	}
	if err := alpha.CoreV1().Services(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The reboot: nothing of ours is left in the kernel, and alpha's
	// apiserver is down when the host comes back.
	if out, err := theLab.HostRun(ctx, binary, "cleanup"); err != nil {
		t.Fatalf("kube-outpost cleanup: %v\n%s", err, out)
	}
	if own := ownState(t); own != "" {
		t.Fatalf("after the reboot the kernel still has:\n%s", own)
	}
	if _, err := get(url(vip, 80)); err == nil {
		t.Fatal("web answers with nothing of ours in the kernel")
	}
	if err := alphaC.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			alphaC.StartAPIServer(ctx)
		}
	}()

	d2 := startDaemon(t, cfg)
	answeredBy(t, url(vip, 80), 5, "a1")
	answeredBy(t, url(gone, 80), 3, "a2")
	eventually(t, 10*time.Second, "status saying alpha serves its last known state", func() error {
		c := clusterIn(statusJSON(t, sock), "alpha")
		if c == nil || c.Synced || c.LastKnownStateFrom.IsZero() || c.ServicePorts < 2 {
			return fmt.Errorf("alpha: %+v", c)
		}
		return nil
	})
	text, err := theLab.HostRun(ctx, binary, "status", "--socket", sock)
	if err != nil || !strings.Contains(text, "serving last known state from") || !strings.Contains(text, "STALE") {
		t.Errorf("status text: %v\n%s", err, text)
	}
	t.Logf("kube-outpost status, alpha down after the reboot:\n%s", text)
	if d2.count(`msg=ready .*clusters_serving_last_known_state=\[alpha\]`) == 0 {
		t.Errorf("not ready while alpha serves its last known state:\n%s", d2.log.String())
	}
	if body, err := theLab.HTTPGet(ctx, "http://"+metricsAddr+"/metrics"); err != nil ||
		!strings.Contains(body, `kube_outpost_cluster_stale_state{cluster="alpha"} 1`) {
		t.Errorf("metrics lack kube_outpost_cluster_stale_state{cluster=\"alpha\"} 1: %v", err)
	}

	// Alpha answers again: its live state replaces the saved one.
	if err := alphaC.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// The informers retry with a backoff of up to 30 s.
	eventually(t, 60*time.Second, "the deleted service gone", func() error {
		if body, err := get(url(gone, 80)); err == nil {
			return fmt.Errorf("answered by %q", body)
		}
		return nil
	})
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a3"))})
	answeredBy(t, url(vip, 80), 5, "a3")
	c := clusterIn(statusJSON(t, sock), "alpha")
	if c == nil || !c.Synced || !c.LastKnownStateFrom.IsZero() {
		t.Errorf("alpha after its apiserver came back: %+v", c)
	}
	if d2.count(`its live state replaces the last known one`) == 0 {
		t.Error("the daemon never logged the live state replacing the last known one")
	}
}
