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

// TestResize: a reload within the size of the maps changes nothing; one
// past it sizes them anew (for the next sync to load); one past the
// mode's bound is refused.
func TestResize(t *testing.T) {
	p := New(Options{Endpoints: 250000})
	cfg := &config.Config{Clusters: []config.Cluster{{Name: "a", MaxEndpoints: 150000}, {Name: "b", MaxEndpoints: 100000}}}
	if err := p.Resize(cfg); err != nil || p.endpoints() != 250000 {
		t.Errorf("within: %v, sized for %d", err, p.endpoints())
	}
	cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: "c"})
	if err := p.Resize(cfg); err != nil || p.endpoints() != 450000 {
		t.Errorf("a cluster added: %v, sized for %d, want 450000", err, p.endpoints())
	}
	cfg.Clusters = cfg.Clusters[:1]
	if err := p.Resize(cfg); err != nil || p.endpoints() != 450000 {
		t.Errorf("clusters removed: %v, sized for %d, want 450000 (no shrinking before a restart)", err, p.endpoints())
	}
	cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: "big", MaxEndpoints: maxEndpointEntries})
	if err := p.Resize(cfg); err == nil || !strings.Contains(err.Error(), "add up to 1150000, more than mode \"ebpf\" holds (1000000)") {
		t.Errorf("past the bound: %v", err)
	}
}
