package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://192.0.2.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: prod
  context: {cluster: c, user: u}
current-context: prod
`

func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "prod.kubeconfig", kubeconfig)
	good := write(t, dir, "good.toml", "[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\nservice_cidrs = [\"10.96.0.0/12\"]\n")
	routed := write(t, dir, "routed.toml", "routed_clients = [\"172.17.0.0/16\", \"10.20.0.0/16\"]\n[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\nservice_cidrs = [\"10.96.0.0/12\"]\n")
	ebpfRouted := write(t, dir, "ebpf.toml", "mode = \"ebpf\"\nrouted_clients = [\"172.17.0.0/16\"]\n[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\nservice_cidrs = [\"10.96.0.0/12\"]\nserve_node_ports = true\n")
	bad := write(t, dir, "bad.toml", "mode = \"fast\"\nsync_perod = \"1s\"\n[[clusters]]\nname = \"Prod\"\nkubeconfig = \"missing.kubeconfig\"\nservice_cidrs = [\"10.96.0.1/12\"]\n")

	for _, c := range []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout bool
	}{
		{name: "good", args: []string{"check-config", "--config", good}, code: 0,
			stdout: []string{"ok, mode auto", `cluster "prod": kubeconfig ` + filepath.Join(dir, "prod.kubeconfig") + ` (context "prod", server https://192.0.2.1:6443), service_cidrs 10.96.0.0/12`}},
		{name: "good, says routed traffic is not served", args: []string{"check-config", "--config", good}, code: 0,
			stdout: []string{"routed_clients: none; routed traffic is not served"}},
		{name: "routed clients", args: []string{"check-config", "--config", routed}, code: 0,
			stdout: []string{"routed_clients: the services are also served to hosts routed through this one from 172.17.0.0/16, 10.20.0.0/16"}},
		// Every problem at once, each with its line; nothing on stdout.
		{name: "bad", args: []string{"check-config", "--config", bad}, code: 1, noStdout: true,
			stderr: []string{"bad.toml:1: mode \"fast\"", "bad.toml:2: unknown key \"sync_perod\"", "bad.toml:4:", "bad.toml:5:", "bad.toml:6:"}},
		// Socket-level load balancing sees no routed packet: the way out
		// is named with the refusal.
		{name: "ebpf with routed clients and node ports", args: []string{"check-config", "--config", ebpfRouted}, code: 1, noStdout: true,
			stderr: []string{`ebpf.toml:2: routed_clients: mode "ebpf" cannot do routed clients; use `, `ebpf.toml:7: cluster "prod": serve_node_ports: mode "ebpf" cannot do node ports; use `, `mode = "nftables"`}},
		{name: "missing file", args: []string{"check-config", "--config", filepath.Join(dir, "nope.toml")}, code: 1, stderr: []string{"nope.toml"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`}},
		{name: "no command", args: nil, code: 2, stderr: []string{"Usage:"}},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"kube-outpost dev"}},
		{name: "status without a daemon", args: []string{"status", "--socket", filepath.Join(dir, "none.sock")}, code: 1,
			stderr: []string{"kube-outpost is not running (no socket at " + filepath.Join(dir, "none.sock") + ")"}},
		{name: "explain usage", args: []string{"explain"}, code: 2, stderr: []string{"Usage: kube-outpost explain"}},
		{name: "stray argument", args: []string{"check-config", "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{name: "bad log level", args: []string{"run", "--log-level", "loud"}, code: 2, stderr: []string{"--log-level"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(c.args, &out, &errb)
			if code != c.code {
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
			if c.noStdout && out.Len() > 0 {
				t.Errorf("stdout should be empty: %s", out.String())
			}
		})
	}
}
