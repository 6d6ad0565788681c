package ebpf

import (
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// TestSizeMaps: the load-balancing maps of both families are sized for
// twice the state the clusters' limits allow (a sync holds the old and
// the new), the others keep their size.
func TestSizeMaps(t *testing.T) {
	spec, err := loadSock()
	if err != nil {
		t.Fatal(err)
	}
	fixed := map[string]uint32{}
	for name, m := range spec.Maps {
		fixed[name] = m.MaxEntries
	}
	sizeMaps(spec, 300000)
	want := map[string]uint32{"ko_be4": 600000, "ko_be6": 600000, "ko_svc4": 1200000, "ko_svc6": 1200000}
	for name, m := range spec.Maps {
		w, ok := want[name]
		if !ok {
			w = fixed[name]
		}
		if m.MaxEntries != w {
			t.Errorf("%s: %d entries, want %d", name, m.MaxEntries, w)
		}
	}
	if be, slots := capacities(3); be != 2*minEndpointEntries || slots != 4*minEndpointEntries {
		t.Errorf("capacities(3) = %d, %d: below the floor", be, slots)
	}
}

// TestFits: a reload may not raise the clusters' limits past the size
// the maps got at the start.
func TestFits(t *testing.T) {
	p := New(Options{Endpoints: 250000})
	cfg := &config.Config{Clusters: []config.Cluster{{Name: "a", MaxEndpoints: 150000}, {Name: "b", MaxEndpoints: 100000}}}
	if err := p.Fits(cfg); err != nil {
		t.Errorf("within: %v", err)
	}
	cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: "c", MaxEndpoints: 1})
	if err := p.Fits(cfg); err == nil || !strings.Contains(err.Error(), "add up to 250001, more than the ebpf maps were sized for at the start (250000)") {
		t.Errorf("past: %v", err)
	}
	if err := New(Options{}).Fits(&config.Config{Clusters: []config.Cluster{{Name: "a"}}}); err != nil {
		t.Errorf("one cluster at the defaults, sized by default: %v", err)
	}
}
