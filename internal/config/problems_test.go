package config

import (
	"path/filepath"
	"testing"
)

func TestProblemFormat(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "config.toml")
	_, err := Parse([]byte(lines(`masquerade = 1`, `mode = "fast"`)), path)
	want := path + ": no clusters: add a [[clusters]] table\n" +
		path + ":1: masquerade: must be true or false, not an integer\n" +
		path + `:2: mode "fast": this build has the modes "iptables", "ipvs", "limited", and "auto" to pick one`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}
