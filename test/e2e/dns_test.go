//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/internal/names"
)

// dnsListen is where the daemon's DNS server answers in the lab's host
// namespace, the shipped default.
const dnsListen = "127.0.0.153:53"

// withDNS puts a [dns] table, with extra keys, in the config at path,
// before its first [[clusters]], and gives alpha cluster.local too.
func withDNS(t *testing.T, path string, extra ...string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "\n[[clusters]]")
	if i < 0 {
		t.Fatalf("%s: no [[clusters]]", path)
	}
	table := "\n[dns]\n" + fmt.Sprintf("listen = [%q]\n", dnsListen) + strings.Join(extra, "\n")
	text = text[:i] + table + text[i:]
	text = strings.Replace(text, "name = \"alpha\"\n", "name = \"alpha\"\ndns_default = true\n", 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dig asks the daemon's server with dig from the host namespace, and
// returns its answer section, or the status when there is none.
func dig(t *testing.T, args ...string) string {
	t.Helper()
	return digAt(t, netip.MustParseAddrPort(dnsListen), args...)
}

// digAt is dig asking the server at server.
func digAt(t *testing.T, server netip.AddrPort, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := theLab.HostRun(ctx, "dig", append([]string{"@" + server.Addr().String(), "-p", strconv.Itoa(int(server.Port())), "+tries=1", "+time=2",
		"+noall", "+answer", "+authority", "+comments"}, args...)...)
	if err != nil {
		// No answer (exit 9): the status says so, for eventually to
		// retry while the server starts.
		return ";; ->>HEADER<<- opcode: QUERY, status: NO-ANSWER, " + err.Error()
	}
	return out
}

// digStatus is the status dig reports (NOERROR, NXDOMAIN, REFUSED, ...).
func digStatus(out string) string {
	_, rest, ok := strings.Cut(out, "status: ")
	if !ok {
		return "(no status)"
	}
	return strings.TrimRight(strings.Fields(rest)[0], ",")
}

// answerData are the data of the answer section's records, in order.
func answerData(out string) []string {
	var data []string
	inAnswer := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, ";; ANSWER SECTION"):
			inAnswer = true
		case strings.HasPrefix(l, ";") || strings.TrimSpace(l) == "":
			inAnswer = inAnswer && !strings.HasPrefix(l, ";;")
		case inAnswer:
			f := strings.Fields(l)
			data = append(data, strings.Join(f[4:], " "))
		}
	}
	return data
}

// TestDNS asks the daemon's DNS server with dig and Go's resolver, as a
// host's programs would: service names resolve to the address this host
// reaches them at, follow the cluster within a second, and lead real
// connections to the service; names outside the zones are refused.
func TestDNS(t *testing.T) {
	// The VM's guest has no dnsutils: its image is built without them.
	if out, err := theLab.HostRun(context.Background(), "dig", "-v"); err != nil {
		t.Skipf("no dig where the daemon runs (dnsutils): %v %s", err, out)
	}
	alpha, beta := theLab.Cluster("alpha").Admin, theLab.Cluster("beta").Admin
	cfg := writeConfig(t)
	withDNS(t, cfg, `ttl = "2s"`)
	startDaemon(t, cfg)
	ns := namespace(t, alpha, "names")
	made := time.Now()
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
	name := "web." + ns + ".svc.alpha.internal"
	var took time.Duration
	eventually(t, 30*time.Second, name+" resolving", func() error {
		out := dig(t, name, "A")
		if got := answerData(out); len(got) != 1 || got[0] != vip.String() {
			return fmt.Errorf("%s: %q (%s)", name, got, digStatus(out))
		}
		took = time.Since(made)
		return nil
	})
	t.Logf("%s resolved %v after the service was made", name, took.Round(time.Millisecond))

	sock := configValue(t, cfg, "status_socket")
	before := scrapeHost(t)
	t.Run("records", func(t *testing.T) {
		for _, c := range []struct {
			args   []string
			status string
			want   []string
		}{
			{[]string{name, "A"}, "NOERROR", []string{vip.String()}},
			{[]string{"WEB." + ns + ".svc.alpha.internal", "A"}, "NOERROR", []string{vip.String()}},
			{[]string{"web." + ns + ".svc.cluster.local", "A"}, "NOERROR", []string{vip.String()}},
			{[]string{"_http._tcp." + name, "SRV"}, "NOERROR", []string{"0 100 80 " + name + "."}},
			{[]string{"_metrics._tcp." + name, "SRV"}, "NOERROR", []string{"0 100 9100 " + name + "."}},
			{[]string{"-x", vip.String()}, "NOERROR", []string{name + ".", "web." + ns + ".svc.cluster.local."}},
			{[]string{name, "AAAA"}, "NOERROR", nil}, // NODATA
			{[]string{"nope." + ns + ".svc.alpha.internal", "A"}, "NXDOMAIN", nil},
			{[]string{"web." + ns + ".svc.beta.internal", "A"}, "NXDOMAIN", nil},
			{[]string{"kubernetes.io", "A"}, "REFUSED", nil},
			{[]string{"-x", "192.0.2.1"}, "REFUSED", nil},
		} {
			out := dig(t, c.args...)
			got := answerData(out)
			if st := digStatus(out); st != c.status || strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Errorf("dig %s: %s %q, want %s %q\n%s", strings.Join(c.args, " "), st, got, c.status, c.want, out)
			}
			if c.status == "NXDOMAIN" && !strings.Contains(out, "SOA") {
				t.Errorf("dig %s: NXDOMAIN without the SOA that lets a resolver cache it\n%s", strings.Join(c.args, " "), out)
			}
		}
	})

	after := scrapeHost(t)
	t.Run("metrics and status", func(t *testing.T) {
		// The queries of "records", each once: dig asks again neither
		// over UDP (+tries=1) nor over TCP (no answer is truncated).
		want := map[string]float64{
			`cluster="alpha",rcode="NOERROR"`: 7, `cluster="alpha",rcode="NXDOMAIN"`: 1,
			`cluster="beta",rcode="NXDOMAIN"`: 1, `cluster="",rcode="REFUSED"`: 2,
		}
		for labels, n := range want {
			if got := after.value("kube_outpost_dns_queries_total", labels) - before.value("kube_outpost_dns_queries_total", labels); got != n {
				t.Errorf("kube_outpost_dns_queries_total{%s} rose by %v over the records, want %v", labels, got, n)
			}
		}
		if got := after.value("kube_outpost_dns_query_duration_seconds_count", "") - before.value("kube_outpost_dns_query_duration_seconds_count", ""); got != 11 {
			t.Errorf("%v latencies observed over the records, want 11", got)
		}
		rep := statusJSON(t, sock)
		if rep.DNS == nil {
			t.Fatalf("status without the DNS server: %+v", rep)
		}
		zones := map[string]string{}
		for _, z := range rep.DNS.Zones {
			zones[z.Cluster] = strings.Join(z.Zones, " ") + " | " + strings.Join(z.Reverse, " ")
		}
		for _, c := range []struct{ name, zones string }{{"alpha", "alpha.internal cluster.local"}, {"beta", "beta.internal"}} {
			reverse := names.ReverseZones([]netip.Prefix{theLab.Cluster(c.name).ServiceCIDR})
			if want := c.zones + " | " + strings.Join(reverse, " "); zones[c.name] != want {
				t.Errorf("status: %s's zones %q, want %q", c.name, zones[c.name], want)
			}
		}
		if len(rep.DNS.Listen) != 1 || rep.DNS.Listen[0] != dnsListen || rep.DNS.Skipped != 0 {
			t.Errorf("status: %+v", rep.DNS)
		}
		text, err := theLab.HostRun(context.Background(), binary, "status", "--socket", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kube-outpost status:\n%s", text)
		for _, want := range []string{"\nDNS: answering on " + dnsListen + ", ", "\n  alpha: alpha.internal, cluster.local; reverse ", "\n  queries answered: NOERROR "} {
			if !strings.Contains(text, want) {
				t.Errorf("status text lacks %q:\n%s", want, text)
			}
		}
	})

	t.Run("a connection by name, with Go's resolver", func(t *testing.T) {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return theLab.DialHost(ctx, network, dnsListen)
		}}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				ips, err := r.LookupNetIP(ctx, "ip4", host)
				if err != nil {
					return nil, err
				}
				return theLab.DialHost(ctx, network, net.JoinHostPort(ips[0].String(), port))
			}}}
		resp, err := client.Get("http://" + name + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if strings.TrimSpace(string(body)) != "a1" {
			t.Errorf("http://%s/ answered %q, want a1", name, body)
		}
	})

	t.Run("dns-config's dnsmasq snippet, through dnsmasq", func(t *testing.T) {
		throughDNSMasq(t, cfg, name, vip)
	})

	t.Run("a deleted service's name is gone", func(t *testing.T) {
		deleted := time.Now()
		if err := alpha.CoreV1().Services(ns).Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, name+" gone", func() error {
			if out := dig(t, name, "A"); digStatus(out) != "NXDOMAIN" {
				return fmt.Errorf("%s: %s", name, digStatus(out))
			}
			return nil
		})
		t.Logf("%s NXDOMAIN %v after the delete", name, time.Since(deleted).Round(time.Millisecond))
	})

	t.Run("a service of another cluster resolves in its zone", func(t *testing.T) {
		nsB := namespace(t, beta, "names")
		vipB := service(t, beta, nsB, "api", web)
		nameB := "api." + nsB + ".svc.beta.internal"
		eventually(t, 30*time.Second, nameB+" resolving", func() error {
			if got := answerData(dig(t, nameB, "A")); len(got) != 1 || got[0] != vipB.String() {
				return fmt.Errorf("%s: %q", nameB, got)
			}
			return nil
		})
		// Only alpha has cluster.local.
		if out := dig(t, "api."+nsB+".svc.cluster.local", "A"); digStatus(out) != "NXDOMAIN" {
			t.Errorf("beta's service in cluster.local: %s", digStatus(out))
		}
	})
}
