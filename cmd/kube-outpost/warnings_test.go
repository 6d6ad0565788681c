package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const warnToken = "tok-4f1c9e-never-printed"

// warnedConfig is a valid config whose kubeconfig is world-readable with
// its token inline, for a cluster serving node ports without
// endpoint_cidrs: three warnings, no error.
func warnedConfig(t *testing.T, extra string) (cfg, kc string) {
	t.Helper()
	dir := t.TempDir()
	kc = write(t, dir, "prod.kubeconfig", strings.Replace(kubeconfig, "token: t}", "token: "+warnToken+"}", 1))
	if err := os.Chmod(kc, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = write(t, dir, "config.toml", extra+"[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\n"+
		"service_cidrs = [\"10.96.0.0/12\"]\nserve_node_ports = true\n")
	return cfg, kc
}

// TestCheckConfigWarnings: check-config prints each warning on stderr with
// the config file's name, still says ok and exits 0, and never prints the
// token.
func TestCheckConfigWarnings(t *testing.T) {
	cfg, kc := warnedConfig(t, "")
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "ok, mode auto") {
		t.Errorf("stdout lacks the ok line:\n%s", out.String())
	}
	for _, want := range []string{
		cfg + `: warning: cluster "prod": kubeconfig ` + kc + ` is readable by its group, readable by others (mode 0644)`,
		cfg + `: warning: cluster "prod": kubeconfig ` + kc + `: user "u" has its token written inline`,
		cfg + `: warning: cluster "prod": endpoint_cidrs is empty while serve_node_ports = true`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	if strings.Contains(out.String()+errb.String(), warnToken) {
		t.Errorf("check-config printed the token:\n%s\n%s", out.String(), errb.String())
	}
}

// TestRunLogsWarnings: the daemon logs each warning once when it starts
// (here it then stops at a taken port), without the token.
func TestRunLogsWarnings(t *testing.T) {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("iptables mode needs iptables-restore to start")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg, kc := warnedConfig(t, "metrics_address = \""+ln.Addr().String()+"\"\nhealthz_address = \"\"\nlog_level = \"warn\"\n")
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1 (the port is taken)\nstderr: %s", code, errb.String())
	}
	logged := errb.String()
	for _, want := range []string{
		`kubeconfig ` + kc + ` is readable by its group, readable by others (mode 0644)`,
		`has its token written inline`,
		`endpoint_cidrs is empty while serve_node_ports = true`,
	} {
		if n := strings.Count(logged, want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, logged)
		}
	}
	if strings.Contains(logged, warnToken) {
		t.Errorf("run logged the token:\n%s", logged)
	}
	if !strings.Contains(logged, "level=WARN") || !strings.Contains(logged, "config="+filepath.Clean(cfg)) {
		t.Errorf("warnings are not logged at WARN with the config's path:\n%s", logged)
	}
}
