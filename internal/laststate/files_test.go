package laststate

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), Subdir)
	if _, err := Load(dir, alphaID, time.Hour, now); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load without a file: %v, want not exist", err)
	}
	n, err := Save(dir, testState())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(Path(dir, "alpha"))
	if err != nil || fi.Size() != int64(n) || fi.Mode().Perm() != 0o600 {
		t.Errorf("file %v, %v: want %d bytes, mode 0600", fi, err, n)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("dir %v, %v: want mode 0700", di, err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"alpha.json"}) {
		t.Errorf("files %q: a temporary file is left", got)
	}
	st, err := Load(dir, alphaID, 2*time.Hour, now)
	if err != nil || len(st.Objects.Services) != 2 {
		t.Fatalf("Load: %+v, %v", st, err)
	}

	// Written as it is encoded, the file is what Encode makes.
	data, _ := os.ReadFile(Path(dir, "alpha"))
	if want, err := Encode(testState()); err != nil || !bytes.Equal(data, want) {
		t.Errorf("the saved file differs from Encode's (%v):\n%s\n%s", err, data, want)
	}

	// A damaged file is named in the error.
	if err := os.WriteFile(Path(dir, "alpha"), data[:len(data)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	var u *UnusableError
	if _, err := Load(dir, alphaID, 2*time.Hour, now); !errors.As(err, &u) || u.Path != Path(dir, "alpha") {
		t.Errorf("Load of a truncated file: %v", err)
	}
	// Saving replaces it whole.
	if _, err := Save(dir, testState()); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, alphaID, 2*time.Hour, now); err != nil {
		t.Errorf("Load after a new save: %v", err)
	}
	if err := os.Remove(Path(dir, "alpha")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(Path(dir, "alpha"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, alphaID, 2*time.Hour, now); !errors.As(err, &u) || u.Reason != "not a regular file" {
		t.Errorf("Load of a directory: %v", err)
	}
}

// TestSaveFails: a write that fails leaves the old file and no temporary
// one.
func TestSaveFails(t *testing.T) {
	defer func(old int) { maxBytes = old }(maxBytes)
	dir := t.TempDir()
	if _, err := Save(dir, testState()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(Path(dir, "alpha"))
	maxBytes = 100
	var big *TooBigError
	if _, err := Save(dir, testState()); !errors.As(err, &big) {
		t.Fatalf("Save past the cap: %v", err)
	}
	after, _ := os.ReadFile(Path(dir, "alpha"))
	if string(after) != string(before) {
		t.Error("a refused save changed the file")
	}
	if got := names(t, dir); !slices.Equal(got, []string{"alpha.json"}) {
		t.Errorf("files %q", got)
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"alpha.json", "beta.json", ".alpha.json.tmp-123", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "gamma.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Prune(dir, []string{"alpha"}); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, dir), []string{"alpha.json", "gamma.json", "notes.txt"}; !slices.Equal(got, want) {
		t.Errorf("after Prune: %q, want %q", got, want)
	}
	if err := Prune(filepath.Join(dir, "missing"), nil); err != nil {
		t.Errorf("Prune of a missing dir: %v", err)
	}
}
