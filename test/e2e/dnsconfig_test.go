//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/names"
)

// dnsmasqListen is where throughDNSMasq's dnsmasq answers, in the lab's
// host namespace: a port of its own, beside the daemon's server.
var dnsmasqListen = netip.MustParseAddrPort("127.0.0.1:5354")

// scrapeHost reads the daemon's metrics at the default metrics_address,
// in the lab's host namespace.
func scrapeHost(t *testing.T) samples {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: theLab.DialHost, DisableKeepAlives: true, Proxy: nil}}
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseSamples(string(body))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// throughDNSMasq checks the snippets of `kube-outpost dns-config` for the
// config at cfg against its listen address, and, where dnsmasq is
// installed, runs one with the dnsmasq snippet and asks name, vip's
// reverse name and a missing name through it.
func throughDNSMasq(t *testing.T, cfg, name string, vip netip.Addr) {
	ctx := context.Background()
	out, err := theLab.HostRun(ctx, binary, "dns-config", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	zones := []string{"alpha.internal", "cluster.local", "beta.internal"}
	for _, c := range []string{"alpha", "beta"} {
		zones = append(zones, names.ReverseZones([]netip.Prefix{theLab.Cluster(c).ServiceCIDR})...)
	}
	listen := netip.MustParseAddrPort(dnsListen)
	for _, z := range zones {
		for _, want := range []string{
			fmt.Sprintf("server=/%s/%s#%d\n", z, listen.Addr(), listen.Port()),
			fmt.Sprintf("forward-zone:\n    name: %q\n    forward-addr: %s@%d\n", z+".", listen.Addr(), listen.Port()),
			fmt.Sprintf("zone %q { type forward; forward only; forwarders { %s port %d; }; };\n", z, listen.Addr(), listen.Port()),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dns-config lacks %q:\n%s", want, out)
			}
		}
	}
	if n := strings.Count(out, "forward-zone:"); n != len(zones) {
		t.Errorf("%d unbound forward zones, want %d:\n%s", n, len(zones), out)
	}
	if !strings.Contains(out, "Every listen address is loopback") {
		t.Errorf("dns-config does not say that a routed host reaches no listen address:\n%s", out)
	}

	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skipf("no dnsmasq here (dnsmasq-base, in hack/deps.sh): the snippet was only read, not run")
	}
	snippet, err := theLab.HostRun(ctx, binary, "dns-config", "--config", cfg, "--resolver", "dnsmasq")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "kube-outpost.conf")
	if err := os.WriteFile(conf, []byte(snippet), 0o644); err != nil {
		t.Fatal(err)
	}
	// bogus-priv and stop-dns-rebind, as many hosts have them: the
	// snippet must get the service range's reverse names and private
	// answers through both. No upstream: nothing else is asked.
	cmd := theLab.HostCommand(ctx, bin, "--keep-in-foreground", "--conf-file="+conf, "--no-resolv", "--no-hosts",
		"--bind-interfaces", "--listen-address="+dnsmasqListen.Addr().String(), fmt.Sprintf("--port=%d", dnsmasqListen.Port()),
		"--bogus-priv", "--stop-dns-rebind", "--pid-file=", "--log-facility=-", "--log-queries", "--cache-size=0")
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", log.String())
		}
	}()
	inClusterLocal := strings.Replace(name, ".alpha.internal", ".cluster.local", 1)
	for _, c := range []struct {
		args   []string
		status string
		want   []string
	}{
		{[]string{name, "A"}, "NOERROR", []string{vip.String()}},
		{[]string{inClusterLocal, "A"}, "NOERROR", []string{vip.String()}},
		{[]string{"-x", vip.String()}, "NOERROR", []string{name + ".", inClusterLocal + "."}},
		{[]string{"nope.svc.alpha.internal", "A"}, "NXDOMAIN", nil},
	} {
		what := "dig " + strings.Join(c.args, " ") + " through dnsmasq"
		eventually(t, 10*time.Second, what, func() error {
			out := digAt(t, dnsmasqListen, c.args...)
			if got := answerData(out); digStatus(out) != c.status || strings.Join(got, ",") != strings.Join(c.want, ",") {
				return fmt.Errorf("%s %q, want %s %q\n%s", digStatus(out), got, c.status, c.want, out)
			}
			return nil
		})
	}
}
