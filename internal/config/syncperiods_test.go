package config

import (
	"path/filepath"
	"testing"
	"time"
)

// TestMinSyncPeriodWithoutFloor: "0s", and any period short of 10 ms, is
// a valid min_sync_period, not refused as one that would spin the loop:
// the sync runner settles after every sync whatever the floor.
func TestMinSyncPeriodWithoutFloor(t *testing.T) {
	dir := testDir(t)
	for _, c := range []struct {
		value string
		want  time.Duration
	}{
		{"0s", 0},
		{"0", 0},
		{"1ns", time.Nanosecond},
		{"5ms", 5 * time.Millisecond},
		{"1m", time.Minute},
	} {
		data := lines(`min_sync_period = "`+c.value+`"`, `sync_period = "1h"`,
			`[[clusters]]`, `name = "prod"`, `kubeconfig = "prod.kubeconfig"`, `service_cidrs = ["10.96.0.0/12"]`)
		cfg, err := Parse([]byte(data), filepath.Join(dir, "config.toml"))
		if err != nil {
			t.Errorf("min_sync_period = %q: %v", c.value, err)
			continue
		}
		if cfg.MinSyncPeriod != c.want {
			t.Errorf("min_sync_period = %q: MinSyncPeriod = %v, want %v", c.value, cfg.MinSyncPeriod, c.want)
		}
	}
}
