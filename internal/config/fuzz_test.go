package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: whatever the file holds, Parse returns a config or problems,
// never panics, and every problem stands on a line of the file (or on
// none, 0). A config it returns passes its own checks again.
func FuzzParse(f *testing.F) {
	dir := testDir(f)
	for _, seed := range []string{
		"",
		lines(`mode = "iptables"`, `[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`),
		lines(`min_sync_period = "1ns"`, `[[clusters]]`, `name = "a"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12", "fd00::/108"]`,
			`local_service_cidr = "100.64.0.0/12"`, `reach = "routes"`, `pod_cidrs = ["10.244.0.0/16"]`, `[[clusters]]`, `name = "a"`),
		lines(`routed_clients = ["0.0.0.0/0"]`, `[clusters]`, `name = 1`),
		lines(`[[clusters]]`, `service_cidrs = ["10.96.0.0/12"`, `]`, `allow_external_ips = [1, "x", "192.168.0.0/16"]`, `max_services = -1`),
		"a = '''\n[[clusters]]\n'''\n[[clusters]]\nname = \"x\"\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(dir, "config.toml")
		cfg, err := Parse([]byte(text), path)
		n := strings.Count(text, "\n") + 1
		var ps Problems
		switch {
		case err == nil && cfg == nil:
			t.Fatal("no config and no error")
		case err == nil:
			if _, err := Parse([]byte(text), path); err != nil {
				t.Fatalf("a second Parse of the same text failed: %v", err)
			}
		case errors.As(err, &ps):
			if len(ps) == 0 {
				t.Fatal("empty Problems")
			}
			for _, p := range ps {
				if p.Line < 0 || p.Line > n {
					t.Fatalf("problem on line %d of a %d-line file: %s", p.Line, n, p.Msg)
				}
			}
		}
	})
}
