//go:build vm

package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

const (
	// guestTimeout bounds one guest, from QEMU's first start to its last
	// exit, power cycles included. A boot takes ~15 s under TCG on 2 idle
	// cores, the package checks two or three minutes; a busy machine is
	// several times slower.
	guestTimeout = 12 * time.Minute
	// e2eTimeout is added for the IPVS guest when it runs the end-to-end
	// suite (part e2e), which takes a few minutes under TCG.
	e2eTimeout = 15 * time.Minute
	svcPort    = 80
	podPort    = 8080
)

// The VM tests' cluster "prod"; the end-to-end suite's "alpha" and "beta"
// (TestIPVSE2E) have test/e2e's ranges, 10.96.0.0/16 and 10.97.0.0/16.
var serviceCIDR = netip.MustParsePrefix("10.95.0.0/16")

// world is what the VM tests share: one lab with one cluster, two pods behind
// one Service.
type world struct {
	lab       *lab.Lab
	cluster   *lab.Cluster
	clusterIP netip.Addr
	pods      []*lab.Pod

	// A Service without endpoints, made by the first test that needs it.
	emptyOnce sync.Once
	emptyIP   netip.Addr
	emptyErr  error
}

var (
	repoRoot string

	setupOnce sync.Once
	theWorld  *world
	setupErr  error

	imageOnce sync.Once
	imageDir  string
	imageErr  error

	distOnce sync.Once
	distDir  string
	distErr  error
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("VM tests need root (network namespaces, QEMU in them)")
		os.Exit(1)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	repoRoot = root
	code := m.Run()
	if theWorld != nil {
		if err := theWorld.lab.Close(); err != nil {
			fmt.Println("closing the lab:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// setup starts the lab once for all tests.
func setup(t *testing.T) *world {
	t.Helper()
	setupOnce.Do(func() { theWorld, setupErr = startWorld() })
	if setupErr != nil {
		t.Fatalf("lab: %v", setupErr)
	}
	return theWorld
}

func startWorld() (_ *world, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clusters := []lab.ClusterOptions{{Name: "prod", ServiceCIDR: serviceCIDR}}
	if selected("TestIPVSE2E") {
		clusters = append(clusters,
			lab.ClusterOptions{Name: "alpha", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")},
			lab.ClusterOptions{Name: "beta", ServiceCIDR: netip.MustParsePrefix("10.97.0.0/16")})
	}
	l, err := lab.Start(ctx, lab.Options{Clusters: clusters, Log: os.Stderr})
	if err != nil {
		return nil, err
	}
	w := &world{lab: l, cluster: l.Cluster("prod")}
	// TestMain closes the lab only once theWorld is set.
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, name := range []string{"web-1", "web-2"} {
		p, err := l.AddPod(ctx, name, []int{podPort}, nil)
		if err != nil {
			return nil, err
		}
		w.pods = append(w.pods, p)
	}
	if _, err := w.cluster.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if w.clusterIP, err = w.service(ctx, "web", w.pods...); err != nil {
		return nil, err
	}
	return w, nil
}

// image returns the guest image directory, building it if needed.
func image(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		if d := os.Getenv("KO_VM_IMAGE"); d != "" {
			imageDir = d
			return
		}
		begin := time.Now()
		cmd := exec.Command("bash", filepath.Join(repoRoot, "test", "vm", "build-image.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			imageErr = fmt.Errorf("test/vm/build-image.sh: %w", err)
			return
		}
		imageDir = strings.TrimSpace(string(out))
		t.Logf("guest image %s (%s)", imageDir, time.Since(begin).Round(time.Second))
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	for _, f := range []string{"vmlinuz", "initrd.gz", "rootfs.img"} {
		if _, err := os.Stat(filepath.Join(imageDir, f)); err != nil {
			t.Fatalf("guest image: %v", err)
		}
	}
	return imageDir
}

// packages returns the newest .deb and .rpm, from $KO_VM_DIST or from dist/
// after `make package`. It skips the test when there are none and the
// Makefile has no package target yet.
func packages(t *testing.T) (deb, rpm string) {
	t.Helper()
	deb, rpm, err := distPackages()
	if err != nil {
		t.Fatal(err)
	}
	if deb == "" || rpm == "" {
		t.Skipf("no kube-outpost_<ver>_amd64.deb and kube-outpost-<ver>.x86_64.rpm in %s, and no `make package` target to build them", distDir)
	}
	t.Logf("packages: %s, %s", deb, rpm)
	return deb, rpm
}

// distPackages is packages without a test: "" for what there is none of.
func distPackages() (deb, rpm string, err error) {
	distOnce.Do(func() {
		if d := os.Getenv("KO_VM_DIST"); d != "" {
			distDir = d
			return
		}
		distDir = filepath.Join(repoRoot, "dist")
		mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
		if err != nil || !bytes.Contains(mk, []byte("\npackage:")) {
			return // no target: use what dist/ has, if anything
		}
		begin := time.Now()
		cmd := exec.Command("make", "package")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			distErr = fmt.Errorf("make package: %w\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "make package: %s\n", time.Since(begin).Round(time.Second))
	})
	if distErr != nil {
		return "", "", distErr
	}
	return newest(filepath.Join(distDir, "kube-outpost_*_amd64.deb")), newest(filepath.Join(distDir, "kube-outpost-*.x86_64.rpm")), nil
}

// newest returns the most recently modified file matching pattern, or "".
func newest(pattern string) string {
	matches, _ := filepath.Glob(pattern)
	sort.Slice(matches, func(i, j int) bool { return mtime(matches[i]).After(mtime(matches[j])) })
	if len(matches) == 0 {
		return ""
	}
	return matches[0]
}

func mtime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// TestGuestNetwork boots the guest with a kube-outpost binary built from this
// tree and run by hand: the guest reaches the pods and the apiserver through
// QEMU's user networking, and the ClusterIP through the guest's own rules.
// It needs no package, and tells a broken VM or lab apart from a broken
// package.
func TestGuestNetwork(t *testing.T) {
	img := image(t)
	w := setup(t)
	share := t.TempDir()
	bin := filepath.Join(share, "kube-outpost")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/kube-outpost")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	w.writeShare(t, share, "smoke")
	w.boot(t, img, share, nil)
}

// TestDebInVM installs the .deb in the guest, offline, and checks the unit:
// start (Type=notify), reload, restart, a power cycle, an upgrade to a newer
// .deb built from the same tree (the admin's config kept, the daemon
// restarted on the new binary, the ClusterIP answering throughout), remove,
// purge; then, in the same boot, the tarball install of the bare binary with
// `kube-outpost service install|start|status|stop|uninstall` and cleanup.
func TestDebInVM(t *testing.T) {
	deb, _ := packages(t)
	img := image(t)
	w := setup(t)
	upgrade := upgradePackage(t, deb)
	share := t.TempDir()
	copyFile(t, deb, filepath.Join(share, filepath.Base(deb)))
	if err := os.Mkdir(filepath.Join(share, "upgrade"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, upgrade.deb, filepath.Join(share, "upgrade", filepath.Base(upgrade.deb)))
	b := w.bootWithoutAPIServer(t)
	w.writeShare(t, share, "package", "UPGRADE_VERSION="+upgrade.version, w.serveSteps(t, b.steps()))
	w.boot(t, img, share, b.between)
}

// rebootSteps are the host's side of the power cycle of TestDebInVM (issue
// 13, guarantees 2 and 6): before it, the guest has a Service "boot" made,
// answered by web-1, and the daemon saves it at the shutdown; while the
// guest is off, "boot" moves to web-2, a Service "boot-new" appears, and the
// apiserver stops; the guest boots without it (and with the legacy iptables
// backend), serves the last known state, then has the apiserver started and
// sees both changes applied; then, while it holds the xtables lock, has
// "boot" moved back to web-1.
type rebootSteps struct {
	w       *world
	stopped bool
	newIP   netip.Addr
}

func (w *world) bootWithoutAPIServer(t *testing.T) *rebootSteps {
	b := &rebootSteps{w: w}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if b.stopped {
			if err := w.cluster.StartAPIServer(ctx); err != nil {
				t.Errorf("starting the apiserver again: %v", err)
				return
			}
			b.stopped = false
		}
		for _, name := range []string{"boot", "boot-new"} {
			if err := w.deleteService(ctx, name); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting service %s: %v", name, err)
			}
		}
	})
	return b
}

func (b *rebootSteps) steps() map[string]hostStep {
	web1 := b.w.pods[0]
	return map[string]hostStep{
		"boot-service": func(ctx context.Context) (string, error) {
			ip, err := b.w.service(ctx, "boot", web1)
			return fmt.Sprintf("BOOT_IP=%s\n", ip), err
		},
		"apiserver-start": func(ctx context.Context) (string, error) {
			if err := b.w.cluster.StartAPIServer(ctx); err != nil {
				return "", err
			}
			b.stopped = false
			return fmt.Sprintf("BOOT_NEW_IP=%s\n", b.newIP), nil
		},
		"boot-back": func(ctx context.Context) (string, error) {
			return "", b.w.setEndpoints(ctx, "boot", web1)
		},
	}
}

// between runs while the guest is off: the changes the guest must find
// applied once the apiserver is back, then the apiserver stops.
func (b *rebootSteps) between() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	web1, web2 := b.w.pods[0], b.w.pods[1]
	if err := b.w.setEndpoints(ctx, "boot", web2); err != nil {
		return err
	}
	ip, err := b.w.service(ctx, "boot-new", web1)
	if err != nil {
		return err
	}
	b.newIP = ip
	if err := b.w.cluster.StopAPIServer(); err != nil {
		return err
	}
	b.stopped = true
	return nil
}

// upgrade is a second .deb, of a higher version than the one under test.
type upgrade struct {
	deb, version string
}

// upgradePackage builds the .deb to upgrade to: `make package` with
// VERSION=<the version of deb>.upgrade1 (higher for dpkg, whatever the
// version from git is) in a copy of the source tree, so that dist/ and bin/
// stay as they are. $KO_VM_UPGRADE_DEB names a ready one instead.
func upgradePackage(t *testing.T, deb string) upgrade {
	t.Helper()
	if d := os.Getenv("KO_VM_UPGRADE_DEB"); d != "" {
		u := upgrade{deb: d, version: debVersion(t, d)}
		mustBeNewer(t, u.version, debVersion(t, deb))
		return u
	}
	from := debVersion(t, deb)
	version := from + ".upgrade1"
	mustBeNewer(t, version, from)
	begin := time.Now()
	tree := t.TempDir()
	ls := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	ls.Dir = repoRoot
	out, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		fi, err := os.Lstat(filepath.Join(repoRoot, f))
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(tree, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, f), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("make", "package", "VERSION="+version)
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package VERSION=%s (in a copy of the tree): %v\n%s", version, err, out)
	}
	u := upgrade{deb: newest(filepath.Join(tree, "dist", "kube-outpost_*_amd64.deb")), version: version}
	if u.deb == "" {
		t.Fatalf("make package VERSION=%s made no .deb in %s/dist", version, tree)
	}
	if got := debVersion(t, u.deb); got != version {
		t.Fatalf("%s: version %q, want %q", u.deb, got, version)
	}
	t.Logf("upgrade package %s (%s to build)", filepath.Base(u.deb), time.Since(begin).Round(100*time.Millisecond))
	return u
}

// debVersion is the Version field of a .deb.
func debVersion(t *testing.T, deb string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))
}

// mustBeNewer fails the test unless dpkg sorts version after from.
func mustBeNewer(t *testing.T, version, from string) {
	t.Helper()
	if err := exec.Command("dpkg", "--compare-versions", version, "gt", from).Run(); err != nil {
		t.Fatalf("upgrade package: version %q is not newer than %q for dpkg", version, from)
	}
}

// TestRPMOnHost checks the .rpm with Debian's rpm: its files and scriptlets,
// and that it installs into a scratch root (without scripts or dependencies:
// this host is no RPM system).
func TestRPMOnHost(t *testing.T) {
	_, rpmFile := packages(t)
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Fatal("rpm is missing: run test/vm/deps.sh")
	}
	info := run(t, "rpm", "-qpi", rpmFile)
	t.Logf("rpm -qpi:\n%s", info)
	out := run(t, "rpm", "-qp", "--scripts", "-l", rpmFile)
	t.Logf("rpm -qp --scripts -l:\n%s", out)
	want := []string{
		"/usr/bin/kube-outpost",
		"/usr/lib/systemd/system/kube-outpost.service",
		"/etc/kube-outpost/config.toml",
		"/usr/share/doc/kube-outpost",
		"postinstall scriptlet",
		"preuninstall scriptlet",
		"postuninstall scriptlet",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("rpm -qp --scripts -l: no %q", w)
		}
	}
	conf := run(t, "rpm", "-qp", "--configfiles", rpmFile)
	if !strings.Contains(conf, "/etc/kube-outpost/config.toml") {
		t.Errorf("/etc/kube-outpost/config.toml is not a %%config file; --configfiles:\n%s", conf)
	}

	root := t.TempDir()
	run(t, "rpm", "--root", root, "--initdb")
	run(t, "rpm", "--root", root, "-i", "--nodeps", "--noscripts", "--force-debian", rpmFile)
	for _, f := range []string{"usr/bin/kube-outpost", "usr/lib/systemd/system/kube-outpost.service", "etc/kube-outpost/config.toml"} {
		fi, err := os.Stat(filepath.Join(root, f))
		if err != nil {
			t.Errorf("after rpm -i into a scratch root: %v", err)
			continue
		}
		t.Logf("/%s %v %d bytes", f, fi.Mode(), fi.Size())
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/kube-outpost")); err == nil && fi.Mode()&0o111 == 0 {
		t.Errorf("/usr/bin/kube-outpost is not executable: %v", fi.Mode())
	}
	out = run(t, filepath.Join(root, "usr/bin/kube-outpost"), "version")
	t.Logf("kube-outpost version (from the rpm): %s", strings.TrimSpace(out))
	t.Logf("rpm -qa in the scratch root: %s", strings.TrimSpace(run(t, "rpm", "--root", root, "-qa")))
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeShare puts into dir what the guest's /vmtest needs besides the
// package or binary: run.sh, vmtest.env (plus extraEnv, NAME=value lines),
// config.toml, the cluster's kubeconfig and CA.
func (w *world) writeShare(t *testing.T, dir, mode string, extraEnv ...string) {
	t.Helper()
	for _, f := range []string{"run.sh", "ipvs.sh", "resolved.sh"} {
		copyFile(t, filepath.Join(repoRoot, "test", "vm", f), filepath.Join(dir, f))
	}
	kc, err := lab.InlineKubeconfig(w.cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prod.kubeconfig"), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	copyFile(t, w.cluster.CAFile, filepath.Join(dir, "ca.crt"))
	var ips, names []string
	for _, p := range w.pods {
		ips = append(ips, p.IP.String())
		names = append(names, p.Name)
	}
	env := fmt.Sprintf(`MODE=%s
CLUSTER_IP=%s
SVC_PORT=%d
SERVICE_CIDR=%s
EXPECT_PODS="%s"
POD_IPS="%s"
POD_PORT=%d
APISERVER=https://%s:6443
`, mode, w.clusterIP, svcPort, serviceCIDR, strings.Join(names, " "), strings.Join(ips, " "), podPort, w.cluster.APIServerIP)
	for _, e := range extraEnv {
		env += e + "\n"
	}
	for name, content := range map[string]string{"config.toml": configTOML("iptables"), "config-ipvs.toml": configTOML("ipvs"), "vmtest.env": env} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// configTOML is the guest's /etc/kube-outpost/config.toml for a proxy mode.
func configTOML(mode string) string {
	return fmt.Sprintf(`# written by test/vm
mode = %q

[[clusters]]
name = "prod"
kubeconfig = "/etc/kube-outpost/prod.kubeconfig"
service_cidrs = [%q]
`, mode, serviceCIDR.String())
}

// maxBoots bounds the power cycles run.sh may ask for (exit 75).
const maxBoots = 2

// boot boots the guest (runGuest), logs its output, and fails the test
// unless the guest reports VMTEST-RESULT: PASS.
func (w *world) boot(t *testing.T, img, share string, between func() error) {
	t.Helper()
	g := w.runGuest(t, img, share, guestTimeout, between)
	artifacts(t, t.Name(), g.log, g.consoles)
	t.Logf("guest log:\n%s", g.log)
	if !strings.HasPrefix(g.result, "PASS") {
		t.Fatal(g.problem)
	}
}

// guestRun is what the boots of one guest came to.
type guestRun struct {
	result   string // after "VMTEST-RESULT: " of the last boot; "" if none came
	log      string // the test's output, every boot
	consoles []string
	boots    int
	booted   time.Duration // first boot: from QEMU's start to the test runner
	total    time.Duration
	problem  string // unless the result is PASS: what went wrong, with the console's end
}

// runGuest makes an ext4 disk of share, boots the guest in the lab's host
// namespace with it as /dev/vdb and follows the guest's test output (its
// second serial port, QEMU's stdout) until it powers off. When it powers off
// with VMTEST-REBOOT, it is booted again from the same disks (a power cycle),
// after between, if not nil, has done what the host does while the guest is
// off; its error ends the run. The root disk is a qcow2 overlay over the cached image, which stays
// pristine. QEMU is killed at timeout, whatever happened.
func (w *world) runGuest(t *testing.T, img, share string, timeout time.Duration, between func() error) guestRun {
	t.Helper()
	tmp := t.TempDir()
	// The guest's runner gives run.sh this long (15 minutes without it).
	if err := os.WriteFile(filepath.Join(share, "timeout"), fmt.Appendf(nil, "%d\n", int((timeout-time.Minute).Seconds())), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(tmp, "share.img")
	if err := makeExt4(share, disk); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(tmp, "root.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", filepath.Join(img, "rootfs.img"), overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	begin := time.Now()
	var guestLog strings.Builder
	var g guestRun
	for n := 1; ; n++ {
		consolePath := filepath.Join(tmp, fmt.Sprintf("console-%d.log", n))
		g.consoles = append(g.consoles, consolePath)
		r := w.runQEMU(ctx, t, img, overlay, disk, consolePath, &guestLog)
		t.Logf("boot %d: up to the test runner in %s, QEMU ran %s", n, r.booted.Round(100*time.Millisecond), r.ran.Round(100*time.Millisecond))
		if n == 1 {
			g.booted = r.booted
		}
		var betweenErr error
		if r.result == "REBOOT" && n < maxBoots && ctx.Err() == nil {
			if between == nil {
				continue
			}
			begin := time.Now()
			if betweenErr = between(); betweenErr == nil {
				t.Logf("between boots %d and %d: done in %s", n, n+1, time.Since(begin).Round(100*time.Millisecond))
				continue
			}
		}
		g.boots, g.total, g.log = n, time.Since(begin), guestLog.String()
		t.Logf("guest: %d boot(s), %s in all", n, g.total.Round(100*time.Millisecond))
		if r.result != "REBOOT" {
			g.result = r.result
		}
		switch {
		case strings.HasPrefix(r.result, "PASS"):
		case betweenErr != nil:
			g.problem = fmt.Sprintf("between boots %d and %d: %v", n, n+1, betweenErr)
		case r.result == "REBOOT":
			g.problem = fmt.Sprintf("guest: asked for more than %d boots", maxBoots)
		case r.result != "":
			g.problem = fmt.Sprintf("guest: VMTEST-RESULT: %s\n(full guest log above)\nconsole:\n%s", r.result, tail(consolePath, 40))
		case ctx.Err() != nil:
			g.problem = fmt.Sprintf("guest: no result within %s\nconsole:\n%s", timeout, tail(consolePath, 60))
		default:
			g.problem = fmt.Sprintf("guest: QEMU exited (%v) without a result\nqemu stderr: %s\nconsole:\n%s", r.err, r.stderr, tail(consolePath, 60))
		}
		return g
	}
}

// qemuRun is what one boot of the guest came to.
type qemuRun struct {
	result string        // after "VMTEST-RESULT: ", or "REBOOT"; "" if none came
	booted time.Duration // from QEMU's start to the test runner's first line
	ran    time.Duration // from QEMU's start to its exit
	err    error         // QEMU's exit
	stderr string
}

// runQEMU boots the guest once and returns when QEMU has exited (the guest
// powers off after its result) or ctx ends (QEMU is killed).
func (w *world) runQEMU(ctx context.Context, t *testing.T, img, rootDisk, shareDisk, consolePath string, guestLog *strings.Builder) qemuRun {
	t.Helper()
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-kernel", filepath.Join(img, "vmlinuz"),
		"-initrd", filepath.Join(img, "initrd.gz"),
		"-append", "console=ttyS0 panic=-1",
		"-drive", "file=" + rootDisk + ",if=virtio,format=qcow2",
		"-drive", "file=" + shareDisk + ",if=virtio,format=raw",
		// User networking: the guest's connections are QEMU's, from the
		// lab's host namespace. No boot ROM: the kernel is given directly.
		"-netdev", "user,id=n0",
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		// ttyS0: kernel and systemd console; ttyS1: the test's output.
		"-serial", "file:" + consolePath,
		"-serial", "stdio",
	}
	cmd := w.lab.HostCommand(ctx, "qemu-system-x86_64", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var r qemuRun
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintf(guestLog, "%s\n", line)
			el := time.Since(begin).Round(100 * time.Millisecond)
			switch {
			case strings.HasPrefix(line, "VMTEST-BOOTED"):
				r.booted = time.Since(begin)
			case strings.HasPrefix(line, "VMTEST-RESULT: "):
				r.result = strings.TrimPrefix(line, "VMTEST-RESULT: ")
			case strings.HasPrefix(line, "VMTEST-REBOOT"):
				r.result = "REBOOT"
			case strings.HasPrefix(line, "== STEP"), strings.HasPrefix(line, "VMTEST-"):
			default:
				continue
			}
			t.Logf("[%s] %s", el, line)
		}
	}()
	<-scanned // QEMU's stdout closes when it exits (or is killed at ctx's end)
	r.err = cmd.Wait()
	r.ran = time.Since(begin)
	r.stderr = stderr.String()
	return r
}

// makeExt4 makes an ext4 image holding dir, without a loop mount.
func makeExt4(dir, img string) error {
	var size int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			size += fi.Size()
		}
		return nil
	})
	size = size*2 + 32<<20
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if err := errors.Join(f.Truncate(size), f.Close()); err != nil {
		return err
	}
	out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-E", "root_owner=0:0", "-d", dir, img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mke2fs -d %s: %w: %s", dir, err, out)
	}
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(b), "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// artifacts keeps the guest's logs in $KO_VM_ARTIFACTS/<name>/, if set.
func artifacts(t *testing.T, name, guestLog string, consoles []string) {
	dir := os.Getenv("KO_VM_ARTIFACTS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	_ = os.WriteFile(filepath.Join(dir, "guest.log"), []byte(guestLog), 0o644)
	for _, c := range consoles {
		if b, err := os.ReadFile(c); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(c)), b, 0o644)
		}
	}
	t.Logf("guest logs kept in %s", dir)
}
