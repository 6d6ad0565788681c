package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var scripts = []string{
	"../../packaging/deb/postinst", "../../packaging/deb/prerm", "../../packaging/deb/postrm",
	"../../packaging/rpm/post", "../../packaging/rpm/preun", "../../packaging/rpm/postun",
}

// TestScriptsParse: every maintainer script is valid POSIX sh.
func TestScriptsParse(t *testing.T) {
	for _, s := range scripts {
		if out, err := exec.Command("sh", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
	}
}

var purgeRE = regexp.MustCompile(`(?m)^purge=(\S+)$`)

// purgeDir is the directory prerm and postrm agree on for the purge copy.
func purgeDir(t *testing.T) string {
	t.Helper()
	var dirs []string
	for _, s := range []string{"../../packaging/deb/prerm", "../../packaging/deb/postrm"} {
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		m := purgeRE.FindSubmatch(data)
		if m == nil {
			t.Fatalf("%s sets no purge=", s)
		}
		dirs = append(dirs, string(m[1]))
	}
	if dirs[0] != dirs[1] {
		t.Fatalf("prerm keeps the purge copy in %s, postrm looks in %s", dirs[0], dirs[1])
	}
	return dirs[0]
}

// TestPurgeCopyOutOfDaemonReach: the binary purge runs as root is kept
// where the daemon's unit lets it write nothing.
func TestPurgeCopyOutOfDaemonReach(t *testing.T) {
	f, err := os.Open("../../unitfile/kube-outpost.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bases := map[string]string{"StateDirectory": "/var/lib", "RuntimeDirectory": "/run", "CacheDirectory": "/var/cache",
		"LogsDirectory": "/var/log", "ConfigurationDirectory": "/etc"}
	var writable []string
	strict := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		for _, v := range strings.Fields(value) {
			switch {
			case key == "ProtectSystem":
				strict = v == "strict"
			case key == "ReadWritePaths":
				writable = append(writable, strings.TrimLeft(v, "-+"))
			case bases[key] != "":
				writable = append(writable, filepath.Join(bases[key], v))
			}
		}
	}
	if !strict {
		t.Fatal("the unit lacks ProtectSystem=strict: the daemon could write anywhere, the purge copy included")
	}
	dir := purgeDir(t)
	for _, w := range writable {
		if rel, err := filepath.Rel(w, dir); err == nil && !strings.HasPrefix(rel, "..") {
			t.Errorf("the purge copy's directory %s is inside %s, which the daemon may write", dir, w)
		}
	}
}

// TestPurgeRunsOnlyTheCopyPrermLeft runs prerm remove and postrm purge
// in a directory standing for /, with the copy as prerm left it and
// tampered with in each way postrm must notice.
func TestPurgeRunsOnlyTheCopyPrermLeft(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, purge, state string)
		runs   bool
	}{
		{"as prerm left it", func(*testing.T, string, string) {}, true},
		{"binary replaced", func(t *testing.T, purge, _ string) {
			writeFile(t, filepath.Join(purge, "kube-outpost"), "#!/bin/sh\necho evil >>\"$LOG\"\n", 0o700)
		}, false},
		{"directory open to others", func(t *testing.T, purge, _ string) { chmod(t, purge, 0o755) }, false},
		{"binary writable by its group", func(t *testing.T, purge, _ string) { chmod(t, filepath.Join(purge, "kube-outpost"), 0o770) }, false},
		{"symlink to a binary elsewhere", func(t *testing.T, purge, state string) {
			bin := filepath.Join(purge, "kube-outpost")
			if err := os.Rename(bin, filepath.Join(state, "moved")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(state, "moved"), bin); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"only an old copy in the state directory", func(t *testing.T, purge, state string) {
			if err := os.RemoveAll(purge); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(state, "kube-outpost.cleanup"), "#!/bin/sh\necho evil >>\"$LOG\"\n", 0o700)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			purge := root + purgeDir(t)
			state := root + "/var/lib/kube-outpost"
			logPath := filepath.Join(root, "log")
			for _, d := range []string{"/usr/bin", "/var/lib/kube-outpost", "/etc/kube-outpost", "/stub"} {
				if err := os.MkdirAll(root+d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The package's binary and systemctl record how they were run.
			writeFile(t, root+"/usr/bin/kube-outpost", "#!/bin/sh\necho \"kube-outpost $*\" >>\"$LOG\"\n", 0o755)
			writeFile(t, root+"/stub/systemctl", "#!/bin/sh\necho \"systemctl $*\" >>\"$LOG\"\n", 0o755)
			writeFile(t, state+"/state", "x", 0o600)
			writeFile(t, root+"/etc/kube-outpost/config.toml", "x", 0o600)

			runScript(t, root, "prerm", "remove")
			if fi, err := os.Stat(purge); err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("prerm left %s: %v, %v; want a directory of mode 0700", purge, fi, err)
			}
			if fi, err := os.Stat(filepath.Join(purge, "kube-outpost")); err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("prerm's copy: %v, %v; want mode 0700", fi, err)
			}
			c.tamper(t, purge, state)
			stderr := runScript(t, root, "postrm", "purge")

			log, _ := os.ReadFile(logPath)
			ran := strings.Contains(string(log), "kube-outpost cleanup")
			if ran != c.runs || strings.Contains(string(log), "evil") {
				t.Errorf("purge ran the copy's cleanup: %v, want %v; log:\n%s", ran, c.runs, log)
			}
			if !c.runs && !strings.Contains(stderr, "kube-outpost cleanup") {
				t.Errorf("postrm does not tell how to remove the rules by hand:\n%s", stderr)
			}
			for _, gone := range []string{purge, state, root + "/etc/kube-outpost"} {
				if _, err := os.Lstat(gone); !os.IsNotExist(err) {
					t.Errorf("%s is still there after purge", gone)
				}
			}
		})
	}
}

// runScript runs a deb maintainer script with its absolute paths moved
// under root, systemctl stubbed, and (when the test is not root) the
// owner postrm expects made the test's own.
func runScript(t *testing.T, root, name string, args ...string) string {
	t.Helper()
	data, err := os.ReadFile("../../packaging/deb/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, p := range []string{"/var/lib/kube-outpost", "/usr/bin/kube-outpost", "/etc/kube-outpost", "/run/systemd/system"} {
		s = strings.ReplaceAll(s, p, root+p)
	}
	if uid := os.Getuid(); uid != 0 {
		s = strings.ReplaceAll(s, "= 0:700", "= "+strconv.Itoa(uid)+":700")
	}
	script := filepath.Join(root, name)
	writeFile(t, script, s, 0o755)
	cmd := exec.Command("sh", append([]string{script}, args...)...)
	cmd.Env = []string{"PATH=" + root + "/stub:/usr/bin:/bin", "LOG=" + filepath.Join(root, "log")}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out, stderr.String())
	}
	return stderr.String()
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, path, mode)
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
