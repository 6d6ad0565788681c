package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// cliSource is a daemon's answers: one cluster, and an explanation for
// prod/default/web and 10.96.0.10:80 only.
type cliSource struct{}

func (cliSource) Status() status.Report {
	return status.Report{
		Mode: "iptables", Version: "v9", StartedAt: time.Now().Add(-time.Hour),
		Clusters: []status.ClusterStatus{{Name: "prod", Server: "https://10.0.0.1:6443", Reachable: true, Synced: true, Services: 7}},
	}
}

func (cliSource) Explain(_ context.Context, q status.Query) (status.Explanation, error) {
	if q.String() != "prod/default/web" && q.Target.String() != "10.96.0.10:80" {
		return status.Explanation{}, fmt.Errorf("no service port has %s: %w", q, model.ErrNotFound)
	}
	return status.Explanation{Query: q.String(), Mode: "iptables", Ports: []status.PortExplanation{{
		Key: "prod/default/web:http", Target: "10.96.0.10:80/TCP", InModel: true, ClusterSynced: true,
		Kernel: status.KernelView{Mode: "iptables", Lines: []string{"-t nat -A OUTPUT -j OUTPOST-SERVICES"}, Endpoints: []proxy.KernelEndpoint{},
			Detail: json.RawMessage(`{"chain":"OUTPOST-S-WEB"}`)},
		Mismatches: []string{},
	}}}, nil
}

// serveCLI serves cliSource on a socket for the length of the test.
func serveCLI(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ko-cli-") // short: a socket path has 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "status.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- status.Serve(ctx, path, cliSource{}) }()
	t.Cleanup(func() {
		cancel()
		<-done
		os.RemoveAll(dir)
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := status.Get(t.Context(), path); err == nil {
			return path
		}
		if time.Now().After(deadline) {
			t.Fatal("the status socket never answered")
		}
	}
}

type cliCase struct {
	name   string
	args   []string
	code   int
	stdout []string
	stderr []string
}

func runCLI(t *testing.T, cmd func([]string, *bytes.Buffer, *bytes.Buffer) int, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := cmd(c.args, &out, &errb); code != c.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out.String(), errb.String())
			}
			for _, s := range c.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range c.stderr {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
			if c.code != 0 && out.Len() > 0 {
				t.Errorf("stdout of a failure should be empty: %s", out.String())
			}
		})
	}
}

func TestStatusCommand(t *testing.T) {
	sock := serveCLI(t)
	missing := filepath.Join(t.TempDir(), "status.sock")
	cmd := func(args []string, out, errb *bytes.Buffer) int { return statusCommand(args, out, errb) }
	runCLI(t, cmd, []cliCase{
		{name: "text", args: []string{"--socket", sock}, stdout: []string{"kube-outpost v9, iptables mode", "CLUSTER", "prod", "https://10.0.0.1:6443"}},
		{name: "json", args: []string{"--socket", sock, "--output", "json"}, stdout: []string{`"mode": "iptables"`, `"services": 7`}},
		{name: "json, short flag", args: []string{"-o", "json", "--socket=" + sock}, stdout: []string{`"name": "prod"`}},
		{name: "not running", args: []string{"--socket", missing}, code: 1,
			stderr: []string{"kube-outpost is not running (no socket at " + missing + ")"}},
		{name: "bad output", args: []string{"--socket", sock, "--output", "yaml"}, code: 2, stderr: []string{`--output "yaml": want text or json`}},
		{name: "stray argument", args: []string{"--socket", sock, "prod"}, code: 2, stderr: []string{`unexpected argument "prod"`}},
		{name: "unknown flag", args: []string{"--verbose"}, code: 2, stderr: []string{"flag provided but not defined: -verbose", "Usage: kube-outpost status"}},
		{name: "help", args: []string{"--help"}, code: 0, stderr: []string{"Usage: kube-outpost status", "-socket"}},
	})

	// The JSON is the Report, for scripts.
	var out, errb bytes.Buffer
	if code := statusCommand([]string{"--socket", sock, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r status.Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Version != "v9" || len(r.Clusters) != 1 || r.Clusters[0].Services != 7 {
		t.Errorf("JSON output reads back as %+v, %v", r, err)
	}
}

func TestExplainCommand(t *testing.T) {
	sock := serveCLI(t)
	missing := filepath.Join(t.TempDir(), "status.sock")
	cmd := func(args []string, out, errb *bytes.Buffer) int { return explainCommand(args, out, errb) }
	runCLI(t, cmd, []cliCase{
		{name: "service", args: []string{"--socket", sock, "prod/default/web"},
			stdout: []string{"prod/default/web (iptables mode)", "prod/default/web:http  10.96.0.10:80/TCP",
				"  kernel: -t nat -A OUTPUT -j OUTPOST-SERVICES\n", "model and kernel agree"}},
		{name: "target, flags after it", args: []string{"10.96.0.10:80", "--socket", sock, "-o", "json"},
			stdout: []string{`"query": "10.96.0.10:80"`, `"target": "10.96.0.10:80/TCP"`,
				// The mode's detail comes through the socket as the mode wrote it.
				"\"detail\": {\n          \"chain\": \"OUTPOST-S-WEB\"\n        }"}},
		{name: "not found", args: []string{"--socket", sock, "prod/default/nope"}, code: 1,
			stderr: []string{"no service port has prod/default/nope: not found"}},
		{name: "not running", args: []string{"--socket", missing, "prod/default/web"}, code: 1,
			stderr: []string{"kube-outpost is not running (no socket at " + missing + ")"}},
		{name: "bad query, before asking", args: []string{"--socket", missing, "default/web"}, code: 2,
			stderr: []string{"want CLUSTER/NAMESPACE/NAME or CLUSTER-IP:PORT[/PROTOCOL]"}},
		{name: "no argument", args: []string{"--socket", sock}, code: 2, stderr: []string{"got 0 arguments", "Usage: kube-outpost explain"}},
		{name: "two arguments", args: []string{"--socket", sock, "prod/default/web", "prod/default/db"}, code: 2, stderr: []string{"got 2 arguments"}},
		{name: "bad output", args: []string{"prod/default/web", "--output", "yaml"}, code: 2, stderr: []string{`--output "yaml"`}},
	})
}
