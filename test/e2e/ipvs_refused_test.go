//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIPVSModeRefusedWithoutModule: on a kernel without ip_vs (this
// machine's), ipvs mode refuses to start, says which module is missing, and
// changes nothing; it never falls back to another mode. The IPVS datapath
// itself is tested in the VM (test/vm), whose kernel has it.
func TestIPVSModeRefusedWithoutModule(t *testing.T) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has ip_vs loaded")
	}
	c := theLab.Cluster("alpha")
	cfg := filepath.Join(t.TempDir(), "config.toml")
	data := "mode = \"ipvs\"\n[[clusters]]\nname = \"alpha\"\nkubeconfig = \"" + c.Kubeconfig + "\"\nservice_cidrs = [\"" + c.ServiceCIDR.String() + "\"]\n"
	if err := os.WriteFile(cfg, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	withHostKeys(t, cfg)
	before := iptablesSave(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := theLab.HostRun(ctx, binary, "run", "--config", cfg)
	if err == nil {
		t.Fatalf("ipvs mode started without ip_vs:\n%s", out)
	}
	for _, want := range []string{"is not supported on this host", "kernel module ip_vs is missing", "or use mode"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	if after := iptablesSave(t); after != before {
		t.Fatalf("a refused start changed the ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
