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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

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

// withAlphaKey adds a line to cluster alpha's block of the config at path.
func withAlphaKey(t *testing.T, path, line string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "name = \"alpha\"\n", "name = \"alpha\"\n"+line+"\n", 1)
	if text == string(data) {
		t.Fatalf("%s: no cluster alpha", path)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// goResolver asks the daemon's server with Go's own resolver, as a Go
// program on the host would once its resolver is pointed there.
func goResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return theLab.DialHost(ctx, network, dnsListen)
	}}
}

// getByName fetches u with Go's resolver asking the daemon's server, and
// returns the body.
func getByName(t *testing.T, u string) string {
	t.Helper()
	r := goResolver()
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
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
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
	// The pods' range: a headless endpoint outside it is never named.
	withAlphaKey(t, cfg, `endpoint_cidrs = ["10.244.0.0/16"]`)
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
		if body := getByName(t, "http://"+name+"/"); body != "a1" {
			t.Errorf("http://%s/ answered %q, want a1", name, body)
		}
	})

	t.Run("dns-config's dnsmasq snippet, through dnsmasq", func(t *testing.T) {
		throughDNSMasq(t, cfg, name, vip)
	})

	t.Run("a headless service names its ready endpoints inside endpoint_cidrs", func(t *testing.T) {
		service(t, alpha, ns, "db", web, func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone })
		// As the EndpointSlice controller makes them: labelled headless,
		// which the watch used to leave out.
		slice(t, alpha, ns, "db", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2")), readyEP(ip("a3")),
			readyEP("10.250.0.77"), {ip: "10.244.1.250"}}, func(es *discoveryv1.EndpointSlice) {
			es.Labels[corev1.IsHeadlessService] = ""
			es.Endpoints[0].Hostname, es.Endpoints[1].Hostname = ptr.To("db-0"), ptr.To("db-1")
		})
		db := "db." + ns + ".svc.alpha.internal"
		a3 := strings.ReplaceAll(ip("a3"), ".", "-") + "." + db
		eventually(t, 30*time.Second, db+" resolving", func() error {
			if got := answerData(dig(t, db, "A")); len(got) != 3 {
				return fmt.Errorf("%s: %q", db, got)
			}
			return nil
		})
		sorted := func(ss []string) string { slices.Sort(ss); return strings.Join(ss, ",") }
		for _, c := range []struct {
			args   []string
			status string
			want   []string
		}{
			{[]string{db, "A"}, "NOERROR", []string{ip("a1"), ip("a2"), ip("a3")}},
			{[]string{"db-0." + db, "A"}, "NOERROR", []string{ip("a1")}},
			{[]string{"db-1." + db, "A"}, "NOERROR", []string{ip("a2")}},
			{[]string{a3, "A"}, "NOERROR", []string{ip("a3")}},
			{[]string{"_http._tcp." + db, "SRV"}, "NOERROR", []string{"0 100 8080 " + a3 + ".", "0 100 8080 db-0." + db + ".", "0 100 8080 db-1." + db + "."}},
			{[]string{"10-250-0-77." + db, "A"}, "NXDOMAIN", nil},
			{[]string{"10-244-1-250." + db, "A"}, "NXDOMAIN", nil},
		} {
			out := dig(t, c.args...)
			if got := answerData(out); digStatus(out) != c.status || sorted(got) != sorted(c.want) {
				t.Errorf("dig %s: %s %q, want %s %q\n%s", strings.Join(c.args, " "), digStatus(out), got, c.status, c.want, out)
			}
		}

		r := goResolver()
		ctx := context.Background()
		ips, err := r.LookupNetIP(ctx, "ip4", db)
		var got []string
		for _, a := range ips {
			got = append(got, a.String())
		}
		if want := []string{ip("a1"), ip("a2"), ip("a3")}; err != nil || sorted(got) != sorted(want) {
			t.Errorf("Go's resolver: %s is %q (%v), want %q", db, got, err, want)
		}
		_, srvs, err := r.LookupSRV(ctx, "http", "tcp", db)
		got = nil
		for _, s := range srvs {
			got = append(got, fmt.Sprintf("%s:%d", s.Target, s.Port))
		}
		if want := []string{a3 + ".:8080", "db-0." + db + ".:8080", "db-1." + db + ".:8080"}; err != nil || sorted(got) != sorted(want) {
			t.Errorf("Go's resolver: SRV of %s: %q (%v), want %q", db, got, err, want)
		}
		// An endpoint's own name leads to that pod.
		if body := getByName(t, "http://db-1."+db+":8080/"); body != "a2" {
			t.Errorf("http://db-1.%s:8080/ answered %q, want a2", db, body)
		}
	})

	t.Run("an ExternalName service is a CNAME out of our zones, never into them", func(t *testing.T) {
		external := func(target string) func(*corev1.Service) {
			return func(s *corev1.Service) { s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, target }
		}
		service(t, alpha, ns, "ext", nil, external("db.example.com"))
		service(t, alpha, ns, "loop", nil, external(name))
		ext := "ext." + ns + ".svc.alpha.internal"
		eventually(t, 30*time.Second, ext+" answering", func() error {
			if out := dig(t, ext, "A"); digStatus(out) != "NOERROR" {
				return fmt.Errorf("%s: %s", ext, digStatus(out))
			}
			return nil
		})
		// Only the CNAME: the server does not look up its target.
		if out := dig(t, ext, "A"); !slices.Equal(answerData(out), []string{"db.example.com."}) || !strings.Contains(out, "CNAME") {
			t.Errorf("dig %s A: %q, want the CNAME alone\n%s", ext, answerData(out), out)
		}
		if cname, err := goResolver().LookupCNAME(context.Background(), ext); err != nil || cname != "db.example.com." {
			t.Errorf("Go's resolver: CNAME of %s is %q (%v), want db.example.com.", ext, cname, err)
		}
		loop := "loop." + ns + ".svc.alpha.internal"
		if out := dig(t, loop, "A"); digStatus(out) != "NXDOMAIN" {
			t.Errorf("dig %s A: %s, want NXDOMAIN: a CNAME into our own zone is refused\n%s", loop, digStatus(out), out)
		}
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
