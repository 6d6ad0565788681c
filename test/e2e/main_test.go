//go:build e2e

// Package e2e runs the real kube-outpost binary in a lab network namespace
// against real kube-apiservers, and checks every behaviour with real packets
// sent from the outside host.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

var (
	theLab *lab.Lab
	pods   = map[string]*lab.Pod{}
	// baseline is the host's ruleset before kube-outpost ever ran there.
	baseline string
	binary   string // the kube-outpost binary under test
)

// The clusters' apiservers allocate from these ranges, and kube-outpost is
// told the same. A test adds a ServiceCIDR to alpha that kube-outpost is not
// told about, to check that ClusterIPs outside service_cidrs are refused.
var (
	alphaRange = netip.MustParsePrefix("10.96.0.0/16")
	betaRange  = netip.MustParsePrefix("10.97.0.0/16")
	extraRange = netip.MustParsePrefix("10.98.0.0/24")
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e tests need root (network namespaces)")
		os.Exit(1)
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "kube-outpost-e2e-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	// In the VM (test/vm) there is no Go: the binary comes built.
	if binary = os.Getenv("KO_E2E_BINARY"); binary == "" {
		binary = filepath.Join(dir, "kube-outpost")
		build := exec.Command("go", "build", "-o", binary, "../../cmd/kube-outpost")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Printf("building kube-outpost: %v\n%s", err, out)
			return 1
		}
	}
	if needsBPFHost(mode) || needsBPFHost(switchFrom) {
		done, err := setUpBPFHost() // bpfhost_test.go
		if err != nil {
			fmt.Println("the throw-away cgroup:", err)
			return 1
		}
		// Deferred first, so it runs last: after every lab is closed.
		defer func() {
			if err := done(); err != nil {
				fmt.Println(err)
				code = 1
			}
		}()
	}
	opts := labOptions(lab.Options{
		Clusters: []lab.ClusterOptions{
			{Name: "alpha", ServiceCIDR: alphaRange},
			{Name: "beta", ServiceCIDR: betaRange},
		},
		Log: os.Stderr,
	})
	if path := os.Getenv("KO_E2E_REMOTE"); path != "" {
		spec, err := lab.ReadRemoteSpec(path)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		opts.Clusters, opts.Remote = nil, spec
	}
	theLab, err = lab.Start(ctx, opts)
	if err != nil {
		fmt.Println("starting the lab:", err)
		return 1
	}
	for _, c := range []struct {
		name string
		want netip.Prefix
	}{{"alpha", alphaRange}, {"beta", betaRange}} {
		if cl := theLab.Cluster(c.name); cl == nil || cl.ServiceCIDR != c.want {
			fmt.Printf("the lab has no cluster %s with service range %v\n", c.name, c.want)
			return 1
		}
	}
	defer theLab.Close()
	defer closeMultiLab()
	if err := addPods(ctx); err != nil {
		fmt.Println("adding pods:", err)
		return 1
	}
	if err := addForeignRules(ctx); err != nil {
		fmt.Println("adding foreign rules:", err)
		return 1
	}
	return m.Run()
}

// TestAfterAll runs, in this order, the tests that must come after every
// other one: the range that testClusterIPOutsideServiceCIDRs adds to alpha
// stays there, and testCleanup checks that `kube-outpost cleanup` undoes
// everything the whole suite did. It waits for the others by calling
// t.Parallel: the testing package resumes a parallel top-level test only
// once every sequential one has finished, whatever the files are called or
// -test.shuffle does. No other test here may call t.Parallel. One of them
// alone runs as -run 'TestAfterAll/Cleanup'.
func TestAfterAll(t *testing.T) {
	t.Parallel()
	t.Run("ClusterIPOutsideServiceCIDRs", testClusterIPOutsideServiceCIDRs)
	t.Run("Cleanup", testCleanup)
}

// daemon is one kube-outpost process in the lab's host namespace.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeConfig writes a config for both lab clusters (or the ones named).
func writeConfig(t *testing.T, clusters ...string) string {
	t.Helper()
	if len(clusters) == 0 {
		clusters = []string{"alpha", "beta"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mode = %q\nmin_sync_period = \"200ms\"\nstatus_socket = %q\n", mode, statusSocket(t))
	for _, name := range clusters {
		c := theLab.Cluster(name)
		fmt.Fprintf(&b, "\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n", name, c.Kubeconfig, c.ServiceCIDR.String())
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// statusSocket is a status socket path for one test's daemons: short, since
// a unix socket path has at most 107 bytes, and a test's TempDir may be
// longer.
func statusSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ko-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "status.sock")
}

// startDaemon runs kube-outpost in the suite lab's host namespace until the
// test ends.
func startDaemon(t *testing.T, cfgPath string) *daemon {
	t.Helper()
	return startDaemonIn(t, theLab, cfgPath)
}

// startDaemonIn runs kube-outpost in a lab's host namespace until the test
// ends.
func startDaemonIn(t *testing.T, l *lab.Lab, cfgPath string) *daemon {
	t.Helper()
	withHostKeys(t, cfgPath)
	// What the unit's privileged ExecStartPre does, in every mode (ipvs
	// mode's sysctls are per network namespace, so the lab's host needs
	// them set).
	if out, err := l.HostRun(context.Background(), binary, "prepare", "--config", cfgPath); err != nil {
		t.Fatalf("kube-outpost prepare: %v\n%s", err, out)
	}
	d := &daemon{t: t, log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = l.HostCommand(context.Background(), binary, "run", "--config", cfgPath, "--log-level", "debug")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	// Registered after the lab's Close, so it runs before it.
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("kube-outpost log:\n%s", d.log.String())
		}
	})
	return d
}

// withHostKeys gives a config the keys whose defaults are this machine's,
// which a test daemon must not use, unless it has them: a state_dir next
// to it, since the default is this machine's /var/lib/kube-outpost, which
// a test must neither write nor share with another (a daemon restarted on
// the same config finds what the last one saved, as on a real host); and
// with a throw-away cgroup (bpfhost_test.go), that cgroup as ebpf_cgroup,
// since the default is the machine's cgroup root.
func withHostKeys(t *testing.T, cfgPath string) {
	t.Helper()
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var lines string
	if !regexp.MustCompile(`(?m)^state_dir\s*=`).Match(data) {
		lines += fmt.Sprintf("state_dir = %q\n", filepath.Join(filepath.Dir(cfgPath), "state"))
	}
	if testCgroup != "" && !regexp.MustCompile(`(?m)^ebpf_cgroup\s*=`).Match(data) {
		lines += fmt.Sprintf("ebpf_cgroup = %q\n", testCgroup)
	}
	if lines == "" {
		return
	}
	// Top-level keys: before the first [[clusters]].
	if err := os.WriteFile(cfgPath, append([]byte(lines), data...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// stop sends SIGTERM, as systemd would, and waits.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Error("kube-outpost did not stop within 15s of SIGTERM")
	}
}

// count returns how many log lines match re.
func (d *daemon) count(re string) int {
	r := regexp.MustCompile(re)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(d.log.String()))
	for sc.Scan() {
		if r.MatchString(sc.Text()) {
			n++
		}
	}
	return n
}

// logTime is the time= field that starts each of the daemon's log lines.
var logTime = regexp.MustCompile(`^time=(\S+) `)

// times returns when the log lines that match re were written.
func (d *daemon) times(re string) []time.Time {
	d.t.Helper()
	r := regexp.MustCompile(re)
	var at []time.Time
	sc := bufio.NewScanner(strings.NewReader(d.log.String()))
	for sc.Scan() {
		if m := logTime.FindStringSubmatch(sc.Text()); m != nil && r.MatchString(sc.Text()) {
			ts, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				d.t.Fatalf("log line time %q: %v", m[1], err)
			}
			at = append(at, ts)
		}
	}
	return at
}

// eventually retries f until it returns nil or the time is up.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// iptablesSave returns the host namespace's ruleset, without the comment
// lines and counters that change from one save to the next.
func iptablesSave(t *testing.T) string {
	t.Helper()
	s, err := saveRules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func saveRules(ctx context.Context) (string, error) {
	var out strings.Builder
	for _, table := range []string{"nat", "filter"} {
		s, err := theLab.HostRun(ctx, "iptables-save", "-t", table)
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "#") || l == "" {
				continue
			}
			out.WriteString(counters.ReplaceAllString(l, "[0:0]"))
			out.WriteByte('\n')
		}
	}
	return out.String(), nil
}

// Every pod serves HTTP on 8080 and 9090 and UDP on 5353, answering with its
// name.
func addPods(ctx context.Context) error {
	for _, name := range []string{"a1", "a2", "a3", "b1", "b2", "x1"} {
		p, err := theLab.AddPod(ctx, name, []int{8080, 9090}, []int{5353})
		if err != nil {
			return err
		}
		pods[name] = p
	}
	return nil
}

// addForeignRules puts rules that are not ours in the host namespace, in the
// tables and built-in chains kube-outpost uses, so the tests can check that
// nothing of them is touched.
func addForeignRules(ctx context.Context) error {
	script := `*nat
:FOREIGN-NAT - [0:0]
-A FOREIGN-NAT -d 192.0.2.10/32 -p tcp -m tcp --dport 1 -j DNAT --to-destination 192.0.2.11:1
-A OUTPUT -d 192.0.2.10/32 -m comment --comment "foreign rule" -j FOREIGN-NAT
-A POSTROUTING -s 192.0.2.12/32 -j RETURN
COMMIT
*filter
:FOREIGN-FILTER - [0:0]
-A FOREIGN-FILTER -d 192.0.2.13/32 -j DROP
-A OUTPUT -j FOREIGN-FILTER
-A FORWARD -d 192.0.2.14/32 -j DROP
COMMIT
`
	cmd := theLab.HostCommand(ctx, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	var err error
	baseline, err = saveRules(ctx)
	return err
}
