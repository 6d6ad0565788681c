package ebpf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// TestExplainMissing: a port the model has and the maps lack is a
// mismatch (its connects are not translated), not an agreement; a port
// neither has is empty without one.
func TestExplainMissing(t *testing.T) {
	r := reader{
		service: func(slotKey) (sockSvcValue, error) { return sockSvcValue{}, ebpf.ErrKeyNotExist },
		backend: func(uint32) (beKey, error) { return beKey{}, ebpf.ErrKeyNotExist },
	}
	key := model.PortKey{Cluster: "a", Namespace: "default", Name: "web", Protocol: model.TCP}
	target := netip.MustParseAddrPort("10.96.0.10:80")
	share := (&explainer{}).Share
	v, err := explain(r, proxy.Want{Key: &key, Target: target, Protocol: model.TCP,
		Endpoints: []proxy.WantEndpoint{{Addr: netip.MustParseAddrPort("10.1.0.1:8080")}}}, share)
	if err != nil || !v.Empty || len(v.Mismatches) != 1 || !strings.Contains(v.Mismatches[0], "not translated") {
		t.Errorf("a port of the model the maps lack: %+v, %v", v, err)
	}
	v, err = explain(r, proxy.Want{Target: target, Protocol: model.TCP}, share)
	if err != nil || !v.Empty || len(v.Mismatches) != 0 {
		t.Errorf("a port neither has: %+v, %v", v, err)
	}
}
