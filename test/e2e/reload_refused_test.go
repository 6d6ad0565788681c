//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadRefused: a SIGHUP with a broken config or kubeconfig changes
// nothing. Each of these is refused as a whole, the log line names the
// problem's key and line, the daemon keeps running, and the kernel's rules
// are byte-identical before and after all of them.
func TestReloadRefused(t *testing.T) {
	alpha := theLab.Cluster("alpha")
	ns := namespace(t, alpha.Admin, "refused")
	vip := service(t, alpha.Admin, ns, "web", web)
	slice(t, alpha.Admin, ns, "web", "1", web, []ep{readyEP(ip("a1"))})

	path := writeConfig(t, "alpha")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, path)
	answeredBy(t, url(vip, 80), 3, "a1")
	before := kernelState(t)

	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kubeconfig := func(user string) string {
		return "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://192.0.2.1:6443\n" +
			"    certificate-authority-data: Zm9v\nusers:\n- name: u\n  user:\n" + user +
			"contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
	}
	expired := write("expired.kubeconfig", kubeconfig("    client-certificate-data: "+expiredCert(t)+"\n"))
	noExec := write("noexec.kubeconfig", kubeconfig("    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kube-outpost-no-such-plugin\n"))
	noToken := write("notoken.kubeconfig", kubeconfig("    tokenFile: /nonexistent/token\n"))
	garbage := write("garbage.kubeconfig", "clusters: {{{")
	noContext := write("nocontext.kubeconfig", strings.Replace(kubeconfig("    token: x\n"), "current-context: x\n", "", 1))

	// top is the running config's top-level lines; cluster(extra...) is
	// alpha as it runs, with extra lines.
	sock := statusSocket(t)
	top := fmt.Sprintf("mode = %q\nmin_sync_period = \"200ms\"\nstatus_socket = %q\n", mode, sock)
	noMin := fmt.Sprintf("mode = %q\nstatus_socket = %q\n", mode, sock) // for the cases that set min_sync_period
	cluster := func(extra ...string) string {
		return fmt.Sprintf("[[clusters]]\nname = \"alpha\"\nkubeconfig = %q\nservice_cidrs = [%q]\n", alpha.Kubeconfig, alpha.ServiceCIDR) +
			strings.Join(extra, "\n") + "\n"
	}
	second := func(name, kc, cidr string, extra ...string) string {
		return fmt.Sprintf("[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n", name, kc, cidr) + strings.Join(extra, "\n") + "\n"
	}
	// Line numbers: top is 3 lines; a cluster's extra lines start at 8.
	cases := []struct {
		name, config string
		want         []string // in the refusal's log line
	}{
		{"syntax", top + "sync_period = \"30s\n" + cluster(), []string{":4: syntax error"}},
		{"unknown key", "sync_perod = \"30s\"\n" + top + cluster(), []string{":1: unknown key", "sync_period"}},
		{"unknown mode", "mode = \"fastest\"\n" + cluster(), []string{":1: mode", "fastest"}},
		{"mode of the wrong type", "mode = 1\n" + cluster(), []string{":1: mode: must be a string"}},
		{"a period that spins the loop", top + "full_sync_period = \"1ns\"\n" + cluster(), []string{":4: full_sync_period", "from 10s"}},
		{"a negative period", noMin + "min_sync_period = \"-1s\"\n" + cluster(), []string{":3: min_sync_period", "from 0s"}},
		{"a period of zero", top + "sync_period = \"0s\"\n" + cluster(), []string{":4: sync_period"}},
		{"not a duration", top + "full_sync_period = \"forever\"\n" + cluster(), []string{":4: full_sync_period", "not a duration"}},
		{"min above sync", noMin + "min_sync_period = \"30s\"\nsync_period = \"2s\"\n" + cluster(), []string{"min_sync_period 30s is longer than sync_period 2s"}},
		{"masquerade of the wrong type", top + "masquerade = \"yes\"\n" + cluster(), []string{":4: masquerade: must be true or false"}},
		{"masquerade mark out of range", top + "masquerade_mark = 99999999999\n" + cluster(), []string{":4: masquerade_mark"}},
		{"ipvs scheduler", top + "ipvs_scheduler = \"fastest\"\n" + cluster(), []string{":4: ipvs_scheduler", "fastest"}},
		{"metrics address", top + "metrics_address = \"localhost\"\n" + cluster(), []string{":4: metrics_address"}},
		{"log level", top + "log_level = \"loud\"\n" + cluster(), []string{":4: log_level"}},
		{"routed_clients not a CIDR", top + "routed_clients = [\"lan\"]\n" + cluster(), []string{":4: routed_clients"}},
		{"routed_clients everything", top + "routed_clients = [\"0.0.0.0/0\"]\n" + cluster(), []string{":4: routed_clients"}},
		{"no clusters", top, []string{"no clusters"}},
		{"clusters as one table", top + "[clusters]\nname = \"alpha\"\n", []string{":4: clusters: must be tables written [[clusters]]"}},
		{"cluster without a name", top + strings.Replace(cluster(), "name = \"alpha\"\n", "", 1), []string{"name is required"}},
		{"cluster name in capitals", top + strings.Replace(cluster(), `"alpha"`, `"Alpha"`, 1), []string{":5: ", "name \\\"Alpha\\\""}},
		{"two clusters of one name", top + cluster() + second("alpha", alpha.Kubeconfig, "10.199.0.0/16"), []string{":10: ", "already used"}},
		{"kubeconfig missing", top + second("alpha", "/nonexistent/kubeconfig", alpha.ServiceCIDR.String()), []string{":6: ", "no such file"}},
		{"kubeconfig a directory", top + second("alpha", dir, alpha.ServiceCIDR.String()), []string{":6: ", "kubeconfig"}},
		{"kubeconfig not YAML", top + second("alpha", garbage, alpha.ServiceCIDR.String()), []string{":6: ", "not a valid kubeconfig"}},
		{"kubeconfig without current-context", top + second("alpha", noContext, alpha.ServiceCIDR.String()), []string{":6: ", "no current-context"}},
		{"context not in the kubeconfig", top + cluster("context = \"elsewhere\""), []string{":8: ", "context \\\"elsewhere\\\" not found"}},
		{"expired client certificate", top + second("alpha", expired, alpha.ServiceCIDR.String()), []string{":6: ", "client certificate expired"}},
		{"exec plugin missing", top + second("alpha", noExec, alpha.ServiceCIDR.String()), []string{":6: ", "exec plugin"}},
		{"token file missing", top + second("alpha", noToken, alpha.ServiceCIDR.String()), []string{":6: ", "tokenFile"}},
		{"service_cidrs missing", top + "[[clusters]]\nname = \"alpha\"\nkubeconfig = \"" + alpha.Kubeconfig + "\"\n", []string{"service_cidrs is required"}},
		{"service_cidrs not a CIDR", top + second("alpha", alpha.Kubeconfig, "10.96.0.0/33"), []string{":7: ", "service_cidrs"}},
		{"service_cidrs everything", top + second("alpha", alpha.Kubeconfig, "0.0.0.0/0"), []string{":7: ", "service_cidrs"}},
		{"service_cidrs loopback", top + second("alpha", alpha.Kubeconfig, "127.0.0.0/16"), []string{":7: ", "service_cidrs"}},
		{"service_cidrs overlapping another cluster's", top + cluster() + second("beta", alpha.Kubeconfig, alpha.ServiceCIDR.String()), []string{":12: ", "overlap"}},
		{"local_service_cidr of another size", top + cluster("local_service_cidr = \"100.64.0.0/30\""), []string{":8: ", "local_service_cidr"}},
		{"namespaces and exclude_namespaces", top + cluster("namespaces = [\"a\"]", "exclude_namespaces = [\"b\"]"), []string{"namespaces"}},
		{"service_selector", top + cluster("service_selector = \"a in (\""), []string{":8: ", "service_selector"}},
		{"reach", top + cluster("reach = \"teleport\""), []string{":8: ", "reach"}},
		{"reach routes without pod_cidrs", top + cluster("reach = \"routes\""), []string{"pod_cidrs"}},
		{"node_address_types", top + cluster("reach = \"nodeport\"", "node_address_types = [\"Psychic\"]"), []string{":9: ", "node_address_types"}},
		{"node ports without masquerading", "masquerade = false\n" + top + cluster("serve_node_ports = true"), []string{":9: ", "serve_node_ports needs masquerade"}},
		{"allow_external_ips everything", top + cluster("allow_external_ips = [\"0.0.0.0/0\"]"), []string{":8: ", "allow_external_ips"}},
		{"endpoint_cidrs not CIDRs", top + cluster("endpoint_cidrs = [1]"), []string{":8: ", "endpoint_cidrs"}},
		{"max_services negative", top + cluster("max_services = -1"), []string{":8: ", "max_services"}},
		{"max_endpoints a string", top + cluster("max_endpoints = \"many\""), []string{":8: ", "max_endpoints"}},
		{"pod_cidrs over the service range", top + cluster("reach = \"routes\"", "pod_cidrs = [\""+alpha.ServiceCIDR.String()+"\"]"), []string{":9: ", "pod_cidrs"}},
		{"a cluster key at the top", "name = \"alpha\"\n" + top + cluster(), []string{":1: unknown key \\\"name\\\""}},
	}
	if len(cases) < 40 {
		t.Fatalf("%d cases; the guarantee is tested with at least 40", len(cases))
	}
	refusals := d.count(`reload refused`)
	lastRefusal := func() string {
		lines := regexp.MustCompile(`(?m)^.*reload refused.*$`).FindAllString(d.log.String(), -1)
		if len(lines) == 0 {
			return ""
		}
		return lines[len(lines)-1]
	}
	for _, tc := range cases {
		if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		refusals++
		deadline := time.Now().Add(10 * time.Second)
		for d.count(`reload refused`) < refusals {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not refused within 10s:\n%s\nlog:\n%s", tc.name, tc.config, d.log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		line := lastRefusal()
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: the refusal does not say %q:\n%s", tc.name, w, line)
			}
		}
	}
	select {
	case <-d.done:
		t.Fatal("the daemon exited during the refused reloads")
	default:
	}
	if after := kernelState(t); after != before {
		t.Errorf("the kernel's rules changed across %d refused reloads:\nbefore:\n%s\nafter:\n%s", len(cases), before, after)
	}
	answeredBy(t, url(vip, 80), 3, "a1")

	// And the good config is still taken.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := d.count(`configuration reloaded`)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the good config reloaded", func() error {
		if d.count(`configuration reloaded`) <= reloaded {
			return fmt.Errorf("no 'configuration reloaded' after the good config")
		}
		return nil
	})
}

// expiredCert is a base64 PEM client certificate that expired a day ago.
func expiredCert(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube-outpost"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
