package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
)

// TestRunPortTaken starts `run` with a metrics port that is taken: it must
// stop at once with an error naming the key, logged as the config or the
// command line says.
func TestRunPortTaken(t *testing.T) {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("iptables mode needs iptables-restore to start")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()

	dir := t.TempDir()
	write(t, dir, "prod.kubeconfig", kubeconfig)
	cfg := write(t, dir, "config.toml", "metrics_address = \""+taken+"\"\nhealthz_address = \"\"\n"+
		"log_format = \"json\"\nlog_level = \"error\"\n"+
		"[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\nservice_cidrs = [\"10.96.0.0/12\"]\n")

	for _, c := range []struct {
		name string
		args []string
		json bool
	}{
		{"config's format", nil, true},
		{"--log-format wins", []string{"--log-format", "text"}, false},
		{"--log-level wins", []string{"--log-level", "debug"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"run", "--config", cfg}, c.args...), &out, &errb)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstderr: %s", code, errb.String())
			}
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, "metrics_address "+taken) || !strings.Contains(last, "address already in use") {
				t.Errorf("the error does not name the key and the cause: %s", last)
			}
			for _, l := range lines {
				if isJSON := json.Valid([]byte(l)); isJSON != c.json {
					t.Errorf("log line %q: JSON %v, want %v", l, isJSON, c.json)
				}
			}
			// log_level = "error" hides the info lines; --log-level
			// debug shows them.
			hasInfo := strings.Contains(errb.String(), "INFO")
			if wantInfo := c.name == "--log-level wins"; hasInfo != wantInfo {
				t.Errorf("info lines logged: %v, want %v:\n%s", hasInfo, wantInfo, errb.String())
			}
		})
	}
}
