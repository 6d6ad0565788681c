//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAutoChoosesNFTables: with mode = "auto" on a host where nft and the
// kernel's nf_tables can do everything the mode uses, as this lab's, the
// choice is nftables, said by check-config before the start and by the
// running daemon's status, and its services answer.
func TestAutoChoosesNFTables(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft here: auto would rightly pass nftables over")
	}
	cfg := writeConfig(t)
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(data), "mode = \""+mode+"\"", `mode = "auto"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	const why = `mode = "auto" chose nftables, the first usable of nftables, iptables, ipvs`
	out, err := theLab.HostRun(context.Background(), binary, "check-config", "--config", cfg)
	if err != nil || !strings.Contains(out, why) {
		t.Fatalf("check-config: %v\n%s\nwant the line %q", err, out, why)
	}
	// Registered first, so run last, once the daemon stopped: the suite's
	// next test runs in its own mode and must not meet this one's rules.
	t.Cleanup(func() {
		if out, err := theLab.HostRun(context.Background(), binary, "cleanup"); err != nil {
			t.Errorf("kube-outpost cleanup: %v\n%s", err, out)
		}
	})
	startDaemon(t, cfg)
	alpha := theLab.Cluster("alpha").Admin
	ns := namespace(t, alpha, "auto")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
	answeredBy(t, url(vip, 80), 3, "a1")
	rep := statusJSON(t, configValue(t, cfg, "status_socket"))
	if rep.Mode != "nftables" || rep.ModeChoice != why {
		t.Errorf("status: mode %q, choice %q; want nftables, %q", rep.Mode, rep.ModeChoice, why)
	}
	if out, err := theLab.HostRun(context.Background(), "nft", "list", "table", "ip", "kube-outpost"); err != nil || !strings.Contains(out, vip.String()) {
		t.Errorf("the service is not in nftables mode's table: %v\n%s", err, out)
	}
}
