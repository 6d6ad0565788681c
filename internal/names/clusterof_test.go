package names

import (
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// A query is counted under the cluster whose zone or service range holds
// its name, whether the name exists or not; "" outside them all.
func TestClusterOf(t *testing.T) {
	ix := Build(testState(), testZones)
	for name, want := range map[string]string{
		"web.shop.svc.prod.internal.":       "prod",
		"nope.shop.svc.cluster.local.":      "prod",
		"prod.internal.":                    "prod",
		"web.shop.svc.dev.internal.":        "dev",
		"web.shop.svc.stale.internal.":      "stale",
		"10.0.96.10.in-addr.arpa.":          "prod",
		"10.0.196.10.in-addr.arpa.":         "dev",
		"10.0.100.10.in-addr.arpa.":         "stale",
		"example.com.":                      "",
		"xprod.internal.":                   "",
		"1.1.168.192.in-addr.arpa.":         "",
		"0.96.10.in-addr.arpa.":             "", // not a full reverse name
		"web.shop.svc.prod.internal.extra.": "",
	} {
		if got := ix.clusterOf(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if got := (&Index{}).clusterOf("web.shop.svc.prod.internal."); got != "" {
		t.Errorf("before the first index: %q", got)
	}
	if got := Build(&model.State{}, testZones).clusterOf("web.shop.svc.prod.internal."); got != "prod" {
		t.Errorf("before any cluster synced: %q, want prod", got)
	}
}
