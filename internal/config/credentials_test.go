package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const secret = "s3cr3t-t0ken-never-shown"

// TestWarnings: each weakness of a kubeconfig, and node ports without
// endpoint_cidrs, gives one warning naming the cluster and the file; a
// careful cluster gives none; no warning quotes a token.
func TestWarnings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	kc := func(cluster, user string) string {
		return "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n" + cluster +
			"users:\n- name: u\n  user:\n" + user +
			"contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
	}
	const https = "    server: https://192.0.2.1:6443\n    certificate-authority-data: Zm9v\n"
	write("token", secret+"\n", 0o600)
	write("loose-token", secret+"\n", 0o640)
	write("good.kubeconfig", kc(https, "    tokenFile: token\n"), 0o600)
	write("loose.kubeconfig", kc(https, "    tokenFile: loose-token\n"), 0o646)
	write("insecure.kubeconfig", kc("    server: https://192.0.2.1:6443\n    insecure-skip-tls-verify: true\n", "    tokenFile: token\n"), 0o600)
	write("http.kubeconfig", kc("    server: http://192.0.2.1:8080\n", "    tokenFile: token\n"), 0o600)
	write("exec.kubeconfig", kc(https, "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/true\n"+
		"      args: [\"--secret\", \""+secret+"\"]\n      interactiveMode: Never\n"), 0o600)
	write("inline.kubeconfig", kc(https, "    token: "+secret+"\n"), 0o600)

	cfg, err := Parse([]byte(lines(
		`[[clusters]]`, `name = "good"`, `kubeconfig = "good.kubeconfig"`, `service_cidrs = ["10.90.0.0/16"]`,
		`serve_node_ports = true`, `endpoint_cidrs = ["10.244.0.0/16"]`,
		`[[clusters]]`, `name = "loose"`, `kubeconfig = "loose.kubeconfig"`, `service_cidrs = ["10.91.0.0/16"]`,
		`[[clusters]]`, `name = "insecure"`, `kubeconfig = "insecure.kubeconfig"`, `service_cidrs = ["10.92.0.0/16"]`,
		`[[clusters]]`, `name = "http"`, `kubeconfig = "http.kubeconfig"`, `service_cidrs = ["10.93.0.0/16"]`,
		`[[clusters]]`, `name = "exec"`, `kubeconfig = "exec.kubeconfig"`, `service_cidrs = ["10.94.0.0/16"]`,
		`[[clusters]]`, `name = "inline"`, `kubeconfig = "inline.kubeconfig"`, `service_cidrs = ["10.95.0.0/16"]`,
		`[[clusters]]`, `name = "open"`, `kubeconfig = "good.kubeconfig"`, `service_cidrs = ["10.96.0.0/16"]`, `serve_node_ports = true`,
	)), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	got := cfg.Warnings()
	p := func(name string) string { return filepath.Join(dir, name) }
	want := []string{
		`cluster "loose": kubeconfig ` + p("loose.kubeconfig") + ` is readable by its group, readable by others, writable by others (mode 0646): ` +
			`it holds the cluster's credentials; chmod 600 ` + p("loose.kubeconfig"),
		`cluster "loose": kubeconfig ` + p("loose.kubeconfig") + `: user "u": tokenFile ` + p("loose-token") + ` is readable by its group (mode 0640): ` +
			`it holds the cluster's credentials; chmod 600 ` + p("loose-token"),
		`cluster "insecure": kubeconfig ` + p("insecure.kubeconfig") + `: cluster "c" sets insecure-skip-tls-verify: whoever is on the way to the apiserver ` +
			`can pose as it and decide what this host programs; give certificate-authority-data instead`,
		`cluster "http": kubeconfig ` + p("http.kubeconfig") + `: server http://192.0.2.1:8080 is plain http: the credentials and every object travel ` +
			`unencrypted and unauthenticated; use https`,
		`cluster "exec": kubeconfig ` + p("exec.kubeconfig") + `: user "u" runs the exec credential plugin "/bin/true" whenever it needs a token, ` +
			`as root with the daemon's privileges: whoever can change that program or this file runs code on this host; a ServiceAccount token in tokenFile needs no program`,
		`cluster "inline": kubeconfig ` + p("inline.kubeconfig") + `: user "u" has its token written inline: put it in a file only root can read and ` +
			`name that file with tokenFile, so that the kubeconfig holds no secret and the token is rotated by replacing one file`,
		`cluster "open": endpoint_cidrs is empty while serve_node_ports = true: whoever reaches this host's node ports reaches any address ` +
			`the cluster names as an endpoint, beyond the few this host always refuses; endpoint_cidrs, set to the cluster's pod and node networks, is the strong control`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n got %q\nwant %q", got, want)
	}
	for _, w := range got {
		if strings.Contains(w, secret) {
			t.Errorf("a warning shows the token: %s", w)
		}
	}
}

// TestRoutedClientsWarning: routed clients reach what the cluster names as
// endpoints, so a cluster without endpoint_cidrs is warned about.
func TestRoutedClientsWarning(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://192.0.2.1:6443\n" +
		"users:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
	if err := os.WriteFile(filepath.Join(dir, "kc"), []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(lines(
		`routed_clients = ["10.20.0.0/16"]`,
		`[[clusters]]`, `name = "fenced"`, `kubeconfig = "kc"`, `service_cidrs = ["10.90.0.0/16"]`, `endpoint_cidrs = ["10.244.0.0/16"]`,
		`[[clusters]]`, `name = "open"`, `kubeconfig = "kc"`, `service_cidrs = ["10.91.0.0/16"]`,
	)), filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	got := cfg.Warnings()
	if len(got) != 1 || !strings.HasPrefix(got[0], `cluster "open": endpoint_cidrs is empty while routed_clients is set`) {
		t.Errorf("warnings = %q, want one for cluster open", got)
	}
}
