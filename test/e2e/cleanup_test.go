//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
)

// testCleanup: `kube-outpost cleanup` must leave the host's ruleset exactly
// as it was before kube-outpost first ran there, foreign rules in the same
// tables and built-in chains included. It runs last, in TestAfterAll, so
// that it cleans up after every other test.
func testCleanup(t *testing.T) {
	beta := theLab.Cluster("beta").Admin
	d := startDaemon(t, writeConfig(t))
	ns := namespace(t, beta, "cleanup")
	vip := service(t, beta, ns, "web", web)
	slice(t, beta, ns, "web", "1", web, []ep{readyEP(ip("b1"))})
	service(t, beta, ns, "empty", web) // a REJECT rule too
	answeredBy(t, url(vip, 80), 3, "b1")
	if ownState(t) == "" {
		t.Fatal("nothing of kube-outpost's in the kernel while the daemon runs")
	}
	d.stop()
	out, err := theLab.HostRun(context.Background(), binary, "cleanup")
	if err != nil {
		t.Fatalf("kube-outpost cleanup: %v", err)
	}
	t.Logf("cleanup said: %s", strings.TrimSpace(out))
	if got := iptablesSave(t); got != baseline {
		t.Fatalf("after cleanup the ruleset differs from before kube-outpost ran\nbefore:\n%s\nafter:\n%s", baseline, got)
	}
	if own := ownState(t); own != "" {
		t.Fatalf("after cleanup the kernel still has:\n%s", own)
	}
	// A second cleanup has nothing to do and succeeds.
	if _, err := theLab.HostRun(context.Background(), binary, "cleanup"); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
	if _, err := get(url(vip, 80)); err == nil {
		t.Fatal("the service still answers after cleanup")
	}
}
