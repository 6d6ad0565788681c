//go:build vm

package vm

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/test/lab"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The IPVS tests share one boot of the guest (MODE=ipvs in run.sh, the parts
// in ipvs.sh): a boot under TCG costs ~20 s. The first of them to run boots
// it with the parts of every IPVS test that `go test -run` selects; each
// then checks its own part, whose result and section of the guest's output
// are marked "VMTEST-PART-BEGIN: <part>" ... "VMTEST-PART: <part> PASS|FAIL".
// The part "mode" runs first, in a guest where nothing has loaded ip_vs yet.
var (
	ipvsOnce   sync.Once
	ipvsGuest  *ipvsBoot
	ipvsBooter string // the test that booted it
)

// ipvsParts: part name, and the test that checks it, in the order they run.
var ipvsParts = []struct{ part, test string }{
	{"mode", "TestIPVSMode"},
	{"kernel", "TestIPVSKernel"},
	{"e2e", "TestIPVSE2E"},
	{"coexist", "TestCoexistence"},
}

// coexistTimeout is added for the IPVS guest when it runs part coexist.
const coexistTimeout = 15 * time.Minute

// ipvsBoot is what the IPVS guest came to.
type ipvsBoot struct {
	run     guestRun
	prelude string              // the guest's output before the first part
	parts   map[string]ipvsPart // by part name
	notRun  map[string]error    // parts left out, and why
	// kernelTests is what ipvs.test -test.list '^TestKernel' lists: each
	// must pass in the guest.
	kernelTests []string
	// e2eTests is what e2e.test -test.list . lists.
	e2eTests []string
}

type ipvsPart struct {
	result string // after "VMTEST-PART: <part> "; "" if the part never ended
	log    string // its section of the guest's output
}

// TestIPVSMode installs the .deb in the guest with mode = "ipvs" (ipvs.sh,
// part_mode): start (Type=notify, the privileged ExecStartPre loading ip_vs
// and setting net.ipv4.vs.* and, so that no VIP answers ARP on the LAN,
// net.ipv4.conf.all.arp_ignore >= 1 and arp_announce = 2), the ClusterIP
// over both pods, the virtual server and its real servers in
// /proc/net/ip_vs, the ClusterIP on outpost0, a service without endpoints refused at once, a restart that
// keeps the virtual server, an open connection and a request loop; then
// `kube-outpost cleanup` and `apt-get purge` each leave nothing behind.
func TestIPVSMode(t *testing.T) {
	packages(t) // skips without packages
	img := image(t)
	w := setup(t)
	b := w.ipvs(t, img)
	b.check(t, "mode")
}

// TestIPVSKernel runs the real-kernel tests of internal/proxy/ipvs
// (build tag ipvskernel; each makes its own network namespaces) as root in
// the guest, whose Debian kernel has ip_vs: every test that
// `ipvs.test -test.list '^TestKernel'` lists must pass there. A skip fails:
// the guest has ip_vs, ipset and the modules, so nothing may be missing.
func TestIPVSKernel(t *testing.T) {
	img := image(t)
	w := setup(t)
	b := w.ipvs(t, img)
	p := b.check(t, "kernel")

	passed := map[string]string{}
	var skipped, failed []string
	re := regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+s)\)`)
	for _, l := range strings.Split(p.log, "\n") {
		m := re.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		switch m[1] {
		case "PASS":
			passed[m[2]] = m[3]
		case "FAIL":
			failed = append(failed, m[2])
		case "SKIP":
			skipped = append(skipped, m[2])
		}
	}
	var missing, times []string
	for _, name := range b.kernelTests {
		d, ok := passed[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		times = append(times, name+" "+d)
	}
	t.Logf("ipvs.test in the guest: %s", strings.Join(times, ", "))
	if len(failed) > 0 || len(skipped) > 0 || len(missing) > 0 {
		t.Fatalf("ipvs.test in the guest: failed %v, skipped %v, did not pass %v (of %v); its output is above", failed, skipped, missing, b.kernelTests)
	}
}

// check fails the test unless its part ran and passed; it logs the part's
// section of the guest's output.
func (b *ipvsBoot) check(t *testing.T, part string) ipvsPart {
	t.Helper()
	if err, ok := b.notRun[part]; ok {
		t.Fatalf("the IPVS guest did not run part %q: %v", part, err)
	}
	p, ok := b.parts[part]
	t.Logf("IPVS guest (shared, booted by %s): up to the test runner in %s, %s in all; this part: %s",
		ipvsBooter, b.run.booted.Round(100*time.Millisecond), b.run.total.Round(100*time.Millisecond), p.result)
	t.Logf("guest log, before the parts:\n%s", b.prelude)
	if !ok || p.log == "" {
		t.Fatalf("the guest's output has no part %q\n%s\nguest log:\n%s", part, b.run.problem, b.run.log)
	}
	t.Logf("guest log, part %s:\n%s", part, p.log)
	if !strings.HasPrefix(p.result, "PASS") {
		if p.result == "" {
			t.Fatalf("part %s did not end\n%s", part, b.run.problem)
		}
		t.Fatalf("part %s: %s", part, p.result)
	}
	return p
}

// ipvs returns the IPVS guest, booting it on first use.
func (w *world) ipvs(t *testing.T, img string) *ipvsBoot {
	t.Helper()
	ipvsOnce.Do(func() {
		ipvsBooter = t.Name()
		ipvsGuest = w.bootIPVS(t, img)
	})
	if ipvsGuest == nil {
		t.Fatalf("the IPVS guest could not be booted (see %s)", ipvsBooter)
	}
	return ipvsGuest
}

// bootIPVS prepares the parts that the selected tests check, boots the guest
// and splits its output by part.
func (w *world) bootIPVS(t *testing.T, img string) *ipvsBoot {
	t.Helper()
	b := &ipvsBoot{parts: map[string]ipvsPart{}, notRun: map[string]error{}}
	share := t.TempDir()
	var parts, env []string
	timeout := guestTimeout
	for _, p := range ipvsParts {
		if !selected(p.test) {
			b.notRun[p.part] = fmt.Errorf("%s is not selected by -run/-skip", p.test)
			continue
		}
		var err error
		switch p.part {
		case "mode", "coexist":
			var deb string
			if deb, _, err = distPackages(); err == nil && deb == "" {
				err = fmt.Errorf("no .deb in %s", distDir)
			}
			if err == nil {
				copyFile(t, deb, filepath.Join(share, filepath.Base(deb)))
			}
			if p.part == "coexist" {
				env = append(env, w.serveSteps(t, w.coexistSteps(t)))
				timeout += coexistTimeout
			}
		case "kernel":
			b.kernelTests, err = buildKernelTests(t, filepath.Join(share, "ipvs.test"))
		case "e2e":
			b.e2eTests, err = w.prepareE2E(t, share)
		}
		if err != nil {
			b.notRun[p.part] = err
			continue
		}
		parts = append(parts, p.part)
	}
	if len(parts) == 0 {
		return b
	}
	empty, err := w.emptyService()
	if err != nil {
		t.Fatalf("the service without endpoints: %v", err)
	}
	env = append(env, fmt.Sprintf("PARTS=%q", strings.Join(parts, " ")), "EMPTY_CLUSTER_IP="+empty.String(), fmt.Sprintf("E2E_RUN=%q", e2eRun()))
	w.writeShare(t, share, "ipvs", env...)
	if b.e2eTests != nil {
		timeout += e2eTimeout
	}
	b.run = w.runGuest(t, img, share, timeout, nil)
	artifacts(t, "TestIPVS", b.run.log, b.run.consoles)

	// Split the output by part.
	var cur string
	var sec, prelude strings.Builder
	for _, l := range strings.SplitAfter(b.run.log, "\n") {
		switch {
		case strings.HasPrefix(l, "VMTEST-PART-BEGIN: "):
			cur = strings.Fields(strings.TrimPrefix(l, "VMTEST-PART-BEGIN: "))[0]
			sec.Reset()
			sec.WriteString(l)
			b.parts[cur] = ipvsPart{log: sec.String()}
		case strings.HasPrefix(l, "VMTEST-PART: "):
			name, result, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(l, "VMTEST-PART: ")), " ")
			sec.WriteString(l)
			b.parts[name] = ipvsPart{result: result, log: sec.String()}
			cur = ""
		case cur != "":
			sec.WriteString(l)
			b.parts[cur] = ipvsPart{log: sec.String()}
		case len(b.parts) == 0:
			prelude.WriteString(l)
		}
	}
	b.prelude = prelude.String()
	return b
}

// buildKernelTests builds the real-kernel tests of internal/proxy/ipvs into
// bin and lists the TestKernel tests in it.
func buildKernelTests(t *testing.T, bin string) ([]string, error) {
	begin := time.Now()
	cmd := exec.Command("go", "test", "-c", "-tags", "ipvskernel", "-o", bin, "./internal/proxy/ipvs/")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go test -c -tags ipvskernel ./internal/proxy/ipvs/: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-test.list", "^TestKernel").Output()
	if err != nil {
		return nil, fmt.Errorf("ipvs.test -test.list: %v", err)
	}
	names := strings.Fields(string(out))
	if len(names) == 0 {
		return nil, fmt.Errorf("ipvs.test -test.list '^TestKernel' lists nothing")
	}
	t.Logf("ipvs.test (go test -c -tags ipvskernel) built in %s: %s", time.Since(begin).Round(100*time.Millisecond), strings.Join(names, " "))
	return names, nil
}

// emptyService creates, once, a Service "empty" without endpoints (no
// EndpointSlice) next to "web", and returns its ClusterIP.
func (w *world) emptyService() (netip.Addr, error) {
	w.emptyOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		w.emptyIP, w.emptyErr = w.service(ctx, "empty")
	})
	return w.emptyIP, w.emptyErr
}

// selected says whether `go test -run/-skip` select the top-level test name
// (an approximation of the testing package's matching, good enough to leave
// out the part of a test that will not run).
func selected(name string) bool {
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		top, _, _ := strings.Cut(f.Value.String(), "/")
		if re, err := regexp.Compile(top); err == nil && !re.MatchString(name) {
			return false
		}
	}
	if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" && !strings.Contains(f.Value.String(), "/") {
		if re, err := regexp.Compile(f.Value.String()); err == nil && re.MatchString(name) {
			return false
		}
	}
	return true
}

// TestIPVSE2E runs the end-to-end suite of test/e2e in the guest in ipvs
// mode (part e2e): the scenarios written for iptables mode on this machine
// run unchanged against real IPVS, with the daemon and the clients in a
// namespace of the guest and the apiservers and pods of this lab, which the
// guest reaches through QEMU's user networking (test/lab/remote.go). Every
// test the suite lists must pass, except those that cannot run there, which
// must skip: e2eSkips.
func TestIPVSE2E(t *testing.T) {
	img := image(t)
	w := setup(t)
	b := w.ipvs(t, img)
	p := b.check(t, "e2e")

	results := map[string]string{}
	re := regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+s)\)`)
	for _, l := range strings.Split(p.log, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			results[m[2]] = m[1] + " " + m[3]
		}
	}
	var bad, times []string
	for _, name := range b.e2eTests {
		if !selectedE2E(name) {
			continue
		}
		got := results[name]
		want := "PASS"
		if _, ok := e2eSkips[name]; ok {
			want = "SKIP"
		}
		if !strings.HasPrefix(got, want) {
			bad = append(bad, fmt.Sprintf("%s: %q, want %s", name, got, want))
			continue
		}
		times = append(times, name+" "+got)
	}
	t.Logf("e2e.test in the guest, ipvs mode: %s", strings.Join(times, ", "))
	if len(bad) > 0 {
		t.Fatalf("e2e.test in the guest: %s (the guest's output is above)", strings.Join(bad, "; "))
	}
}

// e2eSkips are the end-to-end tests that cannot run in the guest, and why.
var e2eSkips = map[string]string{
	"TestIPVSModeRefusedWithoutModule": "the guest's kernel has ip_vs",
	"TestConnectionCounts":             "ipvs mode keeps no connection counter per service port",
	"TestDNS":                          "the guest's image has no dig (dnsutils); the DNS server works alike in every mode",
	"TestIPv6":                         "a remote lab is IPv4 only: QEMU's user networking carries the guest's traffic",
	"TestMultiCluster":                 "it starts three apiservers of its own, which a remote lab cannot",
	"TestOneClusterDown":               "it shares TestMultiCluster's three apiservers, which a remote lab cannot start",
	"TestReach":                        "it needs lab nodes, which a remote lab cannot have",
	"TestHostile":                      "it starts an honest and a rogue apiserver of its own (and a lying proxy), which a remote lab cannot",
	"TestWatchRecovery":                "it puts a relay of its own in front of an apiserver, which a remote lab's apiservers are not the lab's to allow",
}

// prepareE2E builds the end-to-end suite and the binary into share, starts
// this lab's control server for the guest and writes its spec: the guest
// reaches this lab's host namespace, where QEMU runs, at 10.0.2.2.
func (w *world) prepareE2E(t *testing.T, share string) ([]string, error) {
	begin := time.Now()
	bin := filepath.Join(share, "e2e.test")
	for _, args := range [][]string{
		{"test", "-c", "-tags", "e2e", "-o", bin, "./test/e2e/"},
		{"build", "-trimpath", "-o", filepath.Join(share, "kube-outpost"), "./cmd/kube-outpost"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, err := exec.Command(bin, "-test.list", ".").Output()
	if err != nil {
		return nil, fmt.Errorf("e2e.test -test.list: %v", err)
	}
	var names []string
	for _, n := range strings.Fields(string(out)) {
		if strings.HasPrefix(n, "Test") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("e2e.test -test.list . lists nothing")
	}
	ln, err := w.lab.ListenHost("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	spec, err := w.lab.Serve(t.Context(), ln, fmt.Sprintf("http://10.0.2.2:%d", port))
	if err != nil {
		ln.Close()
		return nil, err
	}
	var clusters []lab.RemoteCluster
	for _, c := range spec.Clusters {
		if c.Name != "prod" {
			clusters = append(clusters, c)
		}
	}
	spec.Clusters = clusters
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(share, "remote.json"), data, 0o600); err != nil {
		return nil, err
	}
	t.Logf("e2e.test and kube-outpost built in %s; the guest's lab is served on port %d: %s", time.Since(begin).Round(100*time.Millisecond), port, strings.Join(names, " "))
	return names, nil
}

// e2eRun is the -test.run of e2e.test in the guest: what follows
// "TestIPVSE2E/" in this test's -run, if anything.
func e2eRun() string {
	if sub := e2eSubPattern(); sub != "" {
		return "-test.run=" + sub
	}
	return ""
}

func e2eSubPattern() string {
	f := flag.Lookup("test.run")
	if f == nil {
		return ""
	}
	_, sub, _ := strings.Cut(f.Value.String(), "TestIPVSE2E/")
	return sub
}

// selectedE2E says whether the guest's -test.run selected an e2e test.
func selectedE2E(name string) bool {
	sub := e2eSubPattern()
	if sub == "" {
		return true
	}
	top, _, _ := strings.Cut(sub, "/")
	re, err := regexp.Compile(top)
	return err != nil || re.MatchString(name)
}

// TestCoexistence runs kube-outpost beside Docker, ufw and firewalld in the
// IPVS guest (ipvs.sh, part_coexist; issue 13, guarantee 9): Docker and ufw,
// then Docker and firewalld with its nftables backend (never ufw and
// firewalld at once). With the rules of each in place, our churn (a service
// made, its endpoint replaced, deleted), `systemctl reload kube-outpost`, a
// switch to ipvs mode, `kube-outpost cleanup` in either mode and a start in
// iptables mode leave their rules byte-identical (iptables-nft-save,
// ip6tables-nft-save and `nft -s list ruleset` without what is ours); and
// through each of their reloads (`ufw reload`, `firewall-cmd --reload`,
// `systemctl restart docker`), in both modes, and `nft flush ruleset`, the
// ClusterIP answers again within 5 s; with the jump into our nat rules
// deleted alone, in each mode, within 30 s. The figures are logged.
func TestCoexistence(t *testing.T) {
	packages(t) // skips without packages
	img := image(t)
	w := setup(t)
	b := w.ipvs(t, img)
	p := b.check(t, "coexist")
	var figures []string
	for _, l := range strings.Split(p.log, "\n") {
		if _, f, ok := strings.Cut(l, "VMTEST-INFO: coexist: "); ok {
			figures = append(figures, f)
		}
	}
	t.Logf("figures:\n%s", strings.Join(figures, "\n"))
}

// coexistSteps are the host's side of part coexist: a Service "coexist" made
// on web-1, moved to web-2, deleted.
func (w *world) coexistSteps(t *testing.T) map[string]hostStep {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.deleteService(ctx, "coexist"); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting service coexist: %v", err)
		}
	})
	return map[string]hostStep{
		"coexist-create": func(ctx context.Context) (string, error) {
			ip, err := w.service(ctx, "coexist", w.pods[0])
			return fmt.Sprintf("COEXIST_IP=%s\n", ip), err
		},
		"coexist-change": func(ctx context.Context) (string, error) {
			return "", w.setEndpoints(ctx, "coexist", w.pods[1])
		},
		"coexist-delete": func(ctx context.Context) (string, error) {
			return "", w.deleteService(ctx, "coexist")
		},
	}
}
