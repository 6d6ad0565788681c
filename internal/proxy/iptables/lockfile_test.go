package iptables

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEnsureLockFile: a missing lock file is made, an existing one (maybe
// held by iptables right now) is left as it is.
func TestEnsureLockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xtables.lock")
	if err := EnsureLockFile(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after EnsureLockFile: %v, %v", fi, err)
	}
	if err := os.WriteFile(path, []byte("held"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsureLockFile(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "held" {
		t.Errorf("an existing lock file was changed: %q", b)
	}
	if err := EnsureLockFile(filepath.Join(t.TempDir(), "no", "dir", "xtables.lock")); err == nil {
		t.Error("no error for a lock file in a missing directory")
	}
}
