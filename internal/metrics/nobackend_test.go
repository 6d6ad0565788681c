package metrics

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestNoBackend: the series is the kernel's count in a mode that keeps
// one, and absent in a mode that does not or when the read fails.
func TestNoBackend(t *testing.T) {
	count := func(n uint64, ok bool, err error) NoBackendCount {
		return func(context.Context) (uint64, bool, error) { return n, ok, err }
	}
	log := slog.New(slog.DiscardHandler)
	on := New(Options{Log: log, NoBackend: count(5, true, nil)})
	want := `
# HELP kube_outpost_no_backend_total ` + noBackendHelp + `
# TYPE kube_outpost_no_backend_total counter
kube_outpost_no_backend_total 5
`
	if err := testutil.GatherAndCompare(on.Gatherer(), strings.NewReader(want), "kube_outpost_no_backend_total"); err != nil {
		t.Error(err)
	}
	for name, read := range map[string]NoBackendCount{
		"no counting mode": count(0, false, nil),
		"read fails":       count(0, true, errors.New("map gone")),
		"not asked":        nil,
	} {
		m := New(Options{Log: log, NoBackend: read})
		if n, err := testutil.GatherAndCount(m.Gatherer(), "kube_outpost_no_backend_total"); err != nil || n != 0 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
}
