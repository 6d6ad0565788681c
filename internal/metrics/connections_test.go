package metrics

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestServiceConnections: the series exist only when asked for, and the
// two families of a dual-stack port are one series.
func TestServiceConnections(t *testing.T) {
	web := model.PortKey{Cluster: "prod", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP}
	web6 := web
	web6.IPv6 = true
	read := func(context.Context) (map[model.PortKey]uint64, error) {
		return map[model.PortKey]uint64{web: 3, web6: 4}, nil
	}
	off := New(Options{Log: slog.New(slog.DiscardHandler)})
	if n, err := testutil.GatherAndCount(off.Gatherer(), "kube_outpost_service_connections_total"); err != nil || n != 0 {
		t.Errorf("without service_metrics: %d series, %v", n, err)
	}
	on := New(Options{Log: slog.New(slog.DiscardHandler), ServiceConnections: read})
	want := `
# HELP kube_outpost_service_connections_total ` + connectionsHelp + `
# TYPE kube_outpost_service_connections_total counter
kube_outpost_service_connections_total{cluster="prod",namespace="default",port="http",service="web"} 7
`
	if err := testutil.GatherAndCompare(on.Gatherer(), strings.NewReader(want), "kube_outpost_service_connections_total"); err != nil {
		t.Error(err)
	}
}
