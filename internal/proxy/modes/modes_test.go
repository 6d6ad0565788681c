package modes_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/modes"
)

// TestCapabilityTable: docs/datapaths.md's table of capabilities has a
// column per registered mode and a row per capability, and each cell says
// what the mode declares.
func TestCapabilityTable(t *testing.T) {
	data, err := os.ReadFile("../../../docs/datapaths.md")
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	rows := map[string][]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "| "), " | ")
		if header == nil && cells[0] == "Capability" {
			header = cells
			continue
		}
		if header != nil && len(cells) == len(header) {
			rows[cells[0]] = cells
		}
	}
	if header == nil {
		t.Fatal("docs/datapaths.md has no capability table")
	}
	modes := proxy.Modes()
	if got, want := len(header)-2, len(modes); got != want {
		t.Errorf("the table has %d mode columns (%q), %d modes are registered", got, header[2:], want)
	}
	all := []config.Capability{config.CanRoutedClients, config.CanNodePorts, config.CanExternalIPs,
		config.CanMasquerade, config.CanIPv6, config.CanReject, config.CanAffinity, config.CanSyncByCommand}
	for _, m := range modes {
		col := slices.Index(header, string(m.Name))
		if col < 0 {
			t.Errorf("no column for mode %s", m.Name)
			continue
		}
		for _, c := range all {
			row, ok := rows[string(c)]
			if !ok {
				t.Errorf("no row for %q", c)
				continue
			}
			want := map[bool]string{true: "yes", false: "no"}[m.Can.Has(c)]
			if row[col] != want {
				t.Errorf("mode %s, %s: the table says %q, the mode declares %q", m.Name, c, row[col], want)
			}
		}
	}
}
