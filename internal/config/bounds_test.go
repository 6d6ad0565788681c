package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestBounds: limits that let the clusters hand a mode more than its
// objects hold are refused, naming the key of the cluster to change and
// its line (a cluster without the key: its table's line, counting the
// default); within the bounds, and with mode = "auto", they pass.
func TestBounds(t *testing.T) {
	modesMu.Lock()
	saved := modes
	modes = map[Mode]modeInfo{
		"sized": {can: Capabilities{CanReject}, bounds: Bounds{EndpointsPerPort: 2000, Endpoints: 300000}},
		"free":  {can: Capabilities{CanReject}},
	}
	modesMu.Unlock()
	t.Cleanup(func() { modesMu.Lock(); modes = saved; modesMu.Unlock() })
	dir := testDir(t)
	parse := func(text string) []string {
		t.Helper()
		_, err := Parse([]byte(text), filepath.Join(dir, "config.toml"))
		if err == nil {
			return nil
		}
		return problems(t, err)
	}
	cluster := func(name string, keys ...string) string {
		cidr := map[string]string{"a": "10.96.0.0/16", "b": "10.97.0.0/16", "c": "10.98.0.0/16"}[name]
		return lines(append([]string{`[[clusters]]`, `name = "` + name + `"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["` + cidr + `"]`}, keys...)...)
	}
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"one cluster at the defaults", lines(`mode = "sized"`, cluster("a")), nil},
		{"two clusters at the defaults", lines(`mode = "sized"`, cluster("a"), cluster("b")), []string{
			`7: cluster "b": max_endpoints: the clusters' max_endpoints add up to 400000 (a cluster without the key counts 200000), more than mode "sized" holds (300000 endpoint entries of all clusters together): lower them`,
		}},
		{"two clusters within", lines(`mode = "sized"`, cluster("a", `max_endpoints = 100000`), cluster("b")), nil},
		{"one over the port bound", lines(`mode = "sized"`, cluster("a", `max_endpoints_per_port = 2001`, `max_endpoints = 1000`)), []string{
			`6: cluster "a": max_endpoints_per_port 2001: mode "sized" holds at most 2000 endpoints per service port`,
		}},
		{"no bounds", lines(`mode = "free"`, cluster("a", `max_endpoints_per_port = 100000`), cluster("b"), cluster("c")), nil},
		{"auto", lines(`mode = "auto"`, cluster("a"), cluster("b")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parse(tc.text); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	cfg, err := Parse([]byte(lines(`mode = "free"`, cluster("a", `max_endpoints = 250000`), cluster("b", `max_endpoints = 60000`))), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.EndpointEntries(); n != 310000 {
		t.Errorf("EndpointEntries = %d, want 310000", n)
	}
	err = cfg.Fits("sized", Bounds{Endpoints: 300000})
	if err == nil || !strings.Contains(err.Error(), `cluster "b": max_endpoints: the clusters' max_endpoints add up to 310000`) {
		t.Errorf("Fits: %v", err)
	}
	if err := cfg.Fits("sized", Bounds{Endpoints: 310000, EndpointsPerPort: 1000}); err != nil {
		t.Errorf("Fits within: %v", err)
	}
}
