package config

import (
	"testing"
)

func TestLocator(t *testing.T) {
	l := newLocator(lines(
		`# mode = "commented"`, // 1
		`"mode" = "iptables" # [[clusters]]`,
		`a.b = """`,
		`masquerade = "inside a string"`,
		`"""`, // 5
		`sync_period = [`,
		`  "x = [",`,
		`  { masquerade = 1 },`,
		`]`,
		`[[clusters]]`, // 10
		`name = 'a'`,
		`[clusters.sub]`,
		`x = 1`,
		`[[ clusters ]]`,
		`name = "b"`, // 15
	))
	for _, tt := range []struct {
		cluster int
		path    string
		want    int
	}{
		{-1, "mode", 2},
		{-1, "a", 3},
		{-1, "a.b", 3},
		{-1, "masquerade", 0},
		{-1, "sync_period", 6},
		{-1, "clusters", 10},
		{0, "clusters.name", 11},
		{0, "clusters.sub", 12},
		{0, "clusters.sub.x", 13},
		{1, "clusters.name", 15},
		{1, "clusters.kubeconfig", 14}, // missing: its table's header
		{2, "clusters.name", 11},       // no such cluster: the first mention
	} {
		if got := l.line(tt.cluster, tt.path); got != tt.want {
			t.Errorf("line(%d, %q) = %d, want %d", tt.cluster, tt.path, got, tt.want)
		}
	}
}
