//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The hostile lab: an honest cluster and a rogue one, each with its own
// apiserver. The rogue cluster's name is as long as the config allows, so
// that every rule comment and log line carries the longest cluster name
// there can be.
const (
	honest = "honest"
	rogue  = "rogue-with-a-name-as-long-as-config-lets"
)

var (
	honestRange = netip.MustParsePrefix("10.96.0.0/16")
	rogueRange  = netip.MustParsePrefix("10.99.0.0/16")
	// runtimeHostAddr is an address the host gains while the daemon runs,
	// inside the rogue cluster's service range, as a VPN or a second NIC
	// would add one.
	runtimeHostAddr = netip.MustParseAddr("10.99.0.22")
	// The platform addresses a cloud VM reaches through its gateway.
	alibabaMetadata = netip.MustParseAddr("100.100.100.200")
	awsMetadata     = netip.MustParseAddr("169.254.169.254")
	azureWireServer = netip.MustParseAddr("168.63.129.16")
	hostilePorts    = []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080}}
)

// The limits the rogue cluster gets, when this build knows them (hole 7).
// The rogue cluster's limits: max_services, max_endpoints_per_port and
// max_endpoints.
const (
	limitServices         = 150
	limitEndpointsPerPort = 500
	limitEndpoints        = 5000
)

// The reason labels of kube_outpost_services_refused_total each refusal
// counts under.
var (
	reasonsHostVIP = []string{"protected_address"}
	reasonsDenied  = []string{"unsafe_endpoint"}
	reasonsLimits  = []string{"limit_services", "limit_endpoints", "limit_endpoints_per_port"}
)

// Bytes a lying apiserver puts into names and addresses: a terminal title
// change, a bell and a screen clear; a slice address that is no address.
const (
	escMarker  = "qqescqq"
	escJSON    = `\u001b]0;owned\u0007\u001b[2J`
	garbageIP  = "203.0.113.77"
	garbageSub = garbageIP + `\u001b[31m`
)

// hostileLab is what TestHostile's subtests share.
type hostileLab struct {
	l             *lab.Lab
	honest, rogue kubernetes.Interface
	pods          map[string]*lab.Pod
	neighbour     *lab.Client
	liar          *lab.Liar
	cfgPath, sock string
	cfg           []byte // the config the daemon started with
	d             *daemon
	limits        bool // this build knows the per-cluster limits
	honestVIP     netip.Addr
	// movingVIP is the honest service whose endpoint latency moves between
	// h1 and h2; movingAt is where it is.
	movingVIP netip.Addr
	movingAt  string
	metrics   *http.Client
	// While recordFlag exists, the daemon's iptables-restore input is
	// appended to recorded.
	recordFlag, recorded string
	baselineRoutes       string
}

// TestHostile plays a rogue cluster's admin against the promise of issue
// 11: whatever one cluster writes into its Services and EndpointSlices
// decides where that cluster's own service addresses lead, and nothing
// else. Each subtest writes real objects into the rogue cluster (through
// an apiserver that lies where the attack needs it), then checks with real
// packets that the host's own listeners, its gateway, the metadata
// addresses and the honest cluster are untouched, and that each refusal
// shows in `kube-outpost status`, in kube_outpost_services_refused_total
// and in one log line. docs/security-model.md names these subtests.
func TestHostile(t *testing.T) {
	if os.Getenv("KO_E2E_REMOTE") != "" {
		t.Skip("a remote lab cannot start apiservers of its own, and this test needs an honest and a rogue one")
	}
	h := startHostileLab(t)

	t.Run("baseline", h.baseline)
	t.Run("check-config refuses ranges no cluster can own", h.configRefusals)
	t.Run("endpoints at platform, gateway and other clusters' addresses are refused", h.deniedEndpoints)
	t.Run("external IPs may not cover another cluster's apiserver", h.externalIPAtAPIServer)
	t.Run("names at their maximum length break no one's rules", h.longNames)
	t.Run("control characters from a lying apiserver never reach a terminal", h.controlCharacters)
	t.Run("a ClusterIP at an address the host gains is refused", h.clusterIPAtHostAddress)
	t.Run("limits refuse what is beyond them", h.limitsHold)
	t.Run("a flood from the rogue cluster leaves the honest one on time", h.flood)
	t.Run("the host is untouched after all", h.untouched)
}

func startHostileLab(t *testing.T) *hostileLab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, labOptions(lab.Options{
		Clusters: []lab.ClusterOptions{{Name: honest, ServiceCIDR: honestRange}, {Name: rogue, ServiceCIDR: rogueRange}},
		Log:      os.Stderr,
	}))
	if err != nil {
		t.Fatalf("starting the hostile lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the hostile lab: %v", err)
		}
	})
	h := &hostileLab{
		l: l, honest: l.Cluster(honest).Admin, rogue: l.Cluster(rogue).Admin, pods: map[string]*lab.Pod{},
		metrics: &http.Client{Transport: &http.Transport{DialContext: l.DialHost, DisableKeepAlives: true, Proxy: nil}, Timeout: 5 * time.Second},
	}
	for _, name := range []string{"h1", "h2", "r1"} {
		if h.pods[name], err = l.AddPod(ctx, name, []int{8080}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// What the rogue cluster aims at: the host's SSH (and a second port of
	// it), its gateway's admin page, and the platform's metadata services
	// beyond the gateway.
	for _, s := range []struct{ addr, body string }{{"0.0.0.0:22", "ssh"}, {"0.0.0.0:2222", "ssh-alt"}} {
		ln, err := l.ListenHost(s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go serveBody(ln, s.body)
	}
	if err := l.AddHostDefaultRoute(); err != nil {
		t.Fatal(err)
	}
	if err := l.ServeOnGateway(80, "gateway"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddOffHost(ctx, "metadata", 80, alibabaMetadata, awsMetadata, azureWireServer); err != nil {
		t.Fatal(err)
	}
	if h.neighbour, err = l.AddRoutedClient(ctx, "neighbour"); err != nil {
		t.Fatal(err)
	}
	// The daemon sees the rogue cluster through an apiserver that lies:
	// the one way names with control characters reach it.
	if h.liar, err = l.Cluster(rogue).Liar(map[string]string{escMarker: escJSON, garbageIP: garbageSub}); err != nil {
		t.Fatal(err)
	}
	if h.baselineRoutes, err = l.HostRun(ctx, "ip", "route", "show", "table", "main"); err != nil {
		t.Fatal(err)
	}

	h.sock = statusSocket(t)
	h.limits = h.knowsLimits(t)
	h.cfgPath = filepath.Join(t.TempDir(), "config.toml")
	h.writeConfig(t, h.cfgPath, "")
	if h.cfg, err = os.ReadFile(h.cfgPath); err != nil {
		t.Fatal(err)
	}
	if code, out := h.checkConfig(t, h.cfgPath); code != 0 {
		t.Fatalf("check-config refused the test's own config (exit %d):\n%s", code, out)
	}
	h.d = h.startQuietDaemon(t)
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(familyRules(t, l, false), "\n")
			t.Logf("the rules of %s, first %d of %d lines:\n%s", l.HostNS, min(300, len(lines)), len(lines), strings.Join(lines[:min(300, len(lines))], "\n"))
		}
	})
	ns := namespace(t, h.honest, "web")
	h.honestVIP = service(t, h.honest, ns, "web", hostilePorts)
	slice(t, h.honest, ns, "web", "1", hostilePorts, []ep{readyEP(h.ip("h1")), readyEP(h.ip("h2"))})
	answeredByIn(t, l, url(h.honestVIP, 80), 20, "h1", "h2")
	return h
}

func (h *hostileLab) ip(pod string) string { return h.pods[pod].IP.String() }

// startQuietDaemon is startDaemonIn for a daemon whose log grows large
// (the flood): a failure shows the log's tail, not all of it. Its
// iptables-restore records its input while h.recording is on: what the
// daemon asks of iptables, which iptables-nft truncates without a word and
// iptables-legacy refuses as a whole.
func (h *hostileLab) startQuietDaemon(t *testing.T) *daemon {
	t.Helper()
	l := h.l
	real, err := exec.LookPath("iptables-restore")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h.recordFlag, h.recorded = filepath.Join(dir, "record"), filepath.Join(dir, "restores.txt")
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nif [ -e %q ]; then\n  tee -a %q | %q \"$@\"\n  exit $?\nfi\nexec %q \"$@\"\n", h.recordFlag, h.recorded, real, real)
	if err := os.WriteFile(filepath.Join(bin, "iptables-restore"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	withHostKeys(t, h.cfgPath)
	if out, err := l.HostRun(context.Background(), binary, "prepare", "--config", h.cfgPath); err != nil {
		t.Fatalf("kube-outpost prepare: %v\n%s", err, out)
	}
	d := &daemon{t: t, log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = l.HostCommand(context.Background(), binary, "run", "--config", h.cfgPath, "--log-level", "debug")
	// `ip netns exec` keeps the environment, so the daemon finds the
	// wrapper first.
	d.cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			lines := strings.Split(d.log.String(), "\n")
			t.Logf("kube-outpost log, last %d of %d lines:\n%s", min(300, len(lines)), len(lines), strings.Join(lines[max(0, len(lines)-300):], "\n"))
		}
	})
	return d
}

// record turns the recording of iptables-restore input on, from nothing.
func (h *hostileLab) record(t *testing.T) {
	t.Helper()
	os.Remove(h.recorded)
	if err := os.WriteFile(h.recordFlag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(h.recordFlag); os.Remove(h.recorded) })
}

// knowsLimits asks check-config whether this build has the per-cluster
// limits: until they are merged the config cannot carry them, and every
// other subtest still runs.
func (h *hostileLab) knowsLimits(t *testing.T) bool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe.toml")
	h.writeConfigWith(t, path, "", true)
	_, out := h.checkConfig(t, path)
	return !strings.Contains(out, "unknown key")
}

func (h *hostileLab) writeConfig(t *testing.T, path, rogueExtra string) {
	t.Helper()
	h.writeConfigWith(t, path, rogueExtra, h.limits)
}

// writeConfigWith writes the daemon's config: the honest cluster as it is,
// the rogue one through the liar, with rogueExtra and, when limits, the
// per-cluster limits.
func (h *hostileLab) writeConfigWith(t *testing.T, path, rogueExtra string, limits bool) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "mode = %q\nmin_sync_period = \"200ms\"\nstatus_socket = %q\nmetrics_address = \"127.0.0.1:10249\"\nhealthz_address = \"\"\n", mode, h.sock)
	fmt.Fprintf(&b, "\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n", honest, h.l.Cluster(honest).Kubeconfig, honestRange)
	// serve_node_ports: a rogue node port is one more way to publish what
	// it reaches, and its rules carry the longest comments; in a mode
	// that serves none, the rogue cluster's node ports lead nowhere, and
	// the subtests check that too.
	fmt.Fprintf(&b, "\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n", rogue, h.liar.Kubeconfig, rogueRange)
	if can(t, config.CanNodePorts) {
		b.WriteString("serve_node_ports = true\n")
	}
	if limits {
		fmt.Fprintf(&b, "max_services = %d\nmax_endpoints_per_port = %d\nmax_endpoints = %d\n", limitServices, limitEndpointsPerPort, limitEndpoints)
	}
	b.WriteString(rogueExtra)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkConfig runs check-config in the host namespace, where the daemon
// runs, and returns its exit code and output.
func (h *hostileLab) checkConfig(t *testing.T, path string) (int, string) {
	t.Helper()
	out, err := h.l.HostCommand(context.Background(), binary, "check-config", "--config", path).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("check-config: %v\n%s", err, out)
	return 0, ""
}

// get is one HTTP GET from the host, on a new connection.
func (h *hostileLab) get(u string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return h.l.HTTPGet(ctx, u)
}

// answers checks that u answers body, now.
func (h *hostileLab) answers(t *testing.T, u, body string) {
	t.Helper()
	if got, err := h.get(u); err != nil || got != body {
		t.Errorf("%s answered %q, %v; want %q", u, got, err, body)
	}
}

// neighbourAnswers checks that u answers body to the neighbour, which
// routes through the host.
func (h *hostileLab) neighbourAnswers(t *testing.T, u, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := h.neighbour.HTTPGet(ctx, u); err != nil || got != body {
		t.Errorf("%s answered the neighbour %q, %v; want %q", u, got, err, body)
	}
}

// intact checks what no cluster may touch: the host's SSH for itself and
// for its neighbour, its gateway, the metadata services beyond it, and
// the honest cluster's service.
func (h *hostileLab) intact(t *testing.T) {
	t.Helper()
	host := h.l.HostIP
	h.answers(t, url(host, 22), "ssh")
	h.answers(t, url(host, 2222), "ssh-alt")
	h.neighbourAnswers(t, url(h.neighbour.Gateway, 22), "ssh")
	h.answers(t, url(h.l.Gateway(), 80), "gateway")
	for _, m := range []netip.Addr{alibabaMetadata, awsMetadata, azureWireServer} {
		h.answers(t, url(m, 80), "metadata")
	}
	// Each connection picks h1 or h2 at random, so ten probes see only
	// one of them once in 512 runs (CI met it): probe on until both
	// have answered, up to 40 times (a 2^-39 chance).
	got := map[string]int{}
	for i := 0; i < 40 && (i < 10 || len(got) < 2); i++ {
		body, err := h.get(url(h.honestVIP, 80))
		if err != nil {
			t.Errorf("the honest service at %s: %v", h.honestVIP, err)
			return
		}
		got[body]++
	}
	if err := sameAnswerers(got, []string{"h1", "h2"}); err != nil {
		t.Errorf("the honest service at %s: %v", h.honestVIP, err)
	}
}

func (h *hostileLab) baseline(t *testing.T) {
	h.intact(t)
	if routes, err := h.l.HostRun(context.Background(), "ip", "route", "show", "default"); err != nil || !strings.Contains(routes, "via "+h.l.Gateway().String()) {
		t.Errorf("the host's default route: %q, %v", routes, err)
	}
}

// configRefusals: a service or external IP range that holds the host's own
// addresses, its gateway or its networks, or that no cluster can own, is
// refused before the daemon ever runs with it (hole 2).
func (h *hostileLab) configRefusals(t *testing.T) {
	host, gw := h.l.HostIP, h.l.Gateway()
	for _, c := range []struct{ key, value string }{
		{"service_cidrs", "10.250.0.0/24"},            // the host's own network
		{"service_cidrs", host.String() + "/32"},      // the host's address
		{"service_cidrs", gw.String() + "/32"},        // its default gateway
		{"service_cidrs", "0.0.0.0/0"},                // everything
		{"service_cidrs", "::/0"},                     // everything, IPv6
		{"service_cidrs", "127.0.0.0/8"},              // loopback
		{"service_cidrs", "169.254.0.0/16"},           // link-local: metadata
		{"service_cidrs", "224.0.0.0/4"},              // multicast
		{"allow_external_ips", "0.0.0.0/0"},           // any address the host dials
		{"allow_external_ips", "::/0"},                //
		{"allow_external_ips", host.String() + "/32"}, // the host's own address
		{"allow_external_ips", gw.String() + "/32"},   // its gateway
		{"allow_external_ips", "169.254.169.254/32"},  // metadata
	} {
		t.Run(c.key+" "+c.value, func(t *testing.T) {
			// The rogue cluster alone: no other cluster's range to
			// overlap, so that the refusal is for the range itself.
			ranges, extra := rogueRange.String(), fmt.Sprintf("%s = [%q]\n", c.key, c.value)
			if c.key == "service_cidrs" {
				ranges, extra = c.value, ""
			}
			path := filepath.Join(t.TempDir(), "config.toml")
			cfg := fmt.Sprintf("mode = %q\nstatus_socket = \"\"\nmetrics_address = \"\"\nhealthz_address = \"\"\n\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n%s",
				mode, rogue, h.liar.Kubeconfig, ranges, extra)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := h.checkConfig(t, path)
			if code != 1 || !strings.Contains(out, c.key) || !strings.Contains(out, rogue) || strings.Contains(out, "unknown key") {
				t.Errorf("check-config with the rogue cluster's %s = [%q]: exit %d, want 1 naming the cluster and the key:\n%s", c.key, c.value, code, out)
			}
		})
	}
}

// deniedTarget is an address a rogue endpoint aims at.
type deniedTarget struct {
	name string
	addr netip.AddrPort
}

// deniedEndpoints: EndpointSlices that point at the platform's metadata
// services, the host's gateway, the honest cluster's ClusterIP and its
// apiserver are refused; the rogue service has no endpoint then and is
// refused, and every target is still what it was (hole 3).
func (h *hostileLab) deniedEndpoints(t *testing.T) {
	targets := []deniedTarget{
		{"alibaba", netip.AddrPortFrom(alibabaMetadata, 80)},
		{"azure", netip.AddrPortFrom(azureWireServer, 80)},
		{"aws", netip.AddrPortFrom(awsMetadata, 80)},
		{"gateway", netip.AddrPortFrom(h.l.Gateway(), 80)},
		{"honest-vip", netip.AddrPortFrom(h.honestVIP, 80)},
		{"honest-apiserver", netip.AddrPortFrom(h.l.Cluster(honest).APIServerIP, 6443)},
	}
	ns := namespace(t, h.rogue, "deny")
	before := h.refusals(t)
	vips := map[string]netip.Addr{}
	var made []deniedTarget
	for _, tg := range targets {
		ports := []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: int32(tg.addr.Port())}}
		vips[tg.name] = service(t, h.rogue, ns, tg.name, ports, func(s *corev1.Service) {
			// A node port would publish the target to every neighbour.
			if tg.name == "alibaba" {
				s.Spec.Type = corev1.ServiceTypeNodePort
			}
		})
		err := trySlice(h.rogue, ns, tg.name, ports, []ep{readyEP(tg.addr.Addr().String())})
		if err != nil {
			// The apiserver itself refuses link-local endpoints, so a
			// rogue admin cannot write this one; a lying apiserver could,
			// and the model's unit tests cover it.
			if tg.addr.Addr().IsLinkLocalUnicast() && apierrors.IsInvalid(err) {
				t.Logf("the apiserver refuses an endpoint at %v itself: %v", tg.addr, err)
				continue
			}
			t.Fatalf("writing the slice of %s: %v", tg.name, err)
		}
		made = append(made, tg)
	}
	h.marker(t, ns)
	for _, tg := range made {
		u := url(vips[tg.name], 80)
		if err := refusedIn(h.l, u); err != nil {
			body, _ := h.get(u)
			t.Errorf("the rogue service aiming at %s (%v): %v (answer %q)", tg.name, tg.addr, err, body)
		}
		// The honest cluster's own kubernetes Service leads to its
		// apiserver, rightly: that the rogue one does not is what
		// refusedIn and status show.
		if tg.name != "honest-apiserver" && dnatTo(kernelStateIn(t, h.l), tg.addr) {
			t.Errorf("the kernel DNATs to %v (%s)", tg.addr, tg.name)
		}
	}
	// The metadata at the host's node port: neither for the host nor for a
	// neighbour (refused, or not served to it at all).
	np := h.nodePort(t, ns, "alibaba")
	if body, _ := h.get(url(h.l.HostIP, int(np))); body == "metadata" {
		t.Errorf("the host's node port %d leads the host to the metadata service", np)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if body, _ := h.neighbour.HTTPGet(ctx, url(h.neighbour.Gateway, int(np))); body == "metadata" {
		t.Errorf("the host's node port %d publishes the metadata service to its neighbour", np)
	}
	for _, tg := range made {
		softly(t, 10*time.Second, "the endpoint at "+tg.addr.String()+" refused in status", func() error {
			return refusalIn(statusJSON(t, h.sock), rogue, ns, tg.name, tg.addr.Addr().String())
		})
	}
	h.refusalsCounted(t, before, len(made), reasonsDenied)
	for _, tg := range made {
		h.warnedOnce(t, ns, tg.name)
	}
	h.intact(t)
}

// nodePort is the node port the apiserver gave a rogue service.
func (h *hostileLab) nodePort(t *testing.T, ns, name string) int32 {
	t.Helper()
	s, err := h.rogue.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Spec.Ports) == 0 || s.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("service %s/%s has no node port: %+v", ns, name, s.Spec.Ports)
	}
	return s.Spec.Ports[0].NodePort
}

// externalIPAtAPIServer: the rogue cluster may not capture the address of
// the honest cluster's apiserver with an external IP, which would take
// over the daemon's own watch of it (hole 4). check-config refuses an
// allow_external_ips that covers it; if it does not, the daemon must
// refuse the external IP itself.
func (h *hostileLab) externalIPAtAPIServer(t *testing.T) {
	api := h.l.Cluster(honest).APIServerIP
	extra := fmt.Sprintf("allow_external_ips = [%q]\n", netip.PrefixFrom(api, 32))
	path := filepath.Join(t.TempDir(), "config.toml")
	h.writeConfig(t, path, extra)
	code, out := h.checkConfig(t, path)
	if code == 1 && strings.Contains(out, "allow_external_ips") && !strings.Contains(out, "unknown key") {
		t.Logf("check-config refuses it:\n%s", out)
		return
	}
	if code != 0 {
		t.Fatalf("check-config: exit %d:\n%s", code, out)
	}
	// Accepted: the daemon runs with it, and must refuse the capture.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h.reload(t, data)
	defer h.reload(t, h.cfg)
	ns := namespace(t, h.rogue, "capture")
	ports := []port{{name: "https", proto: corev1.ProtocolTCP, port: 6443, target: 8080}}
	service(t, h.rogue, ns, "apiserver", ports, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{api.String()} })
	slice(t, h.rogue, ns, "apiserver", "1", ports, []ep{readyEP(h.ip("r1"))})
	h.marker(t, ns)
	if dnatFrom(kernelStateIn(t, h.l), netip.AddrPortFrom(api, 6443)) {
		t.Errorf("the honest apiserver's address %v:6443 is captured", api)
	}
	softly(t, 10*time.Second, "the external IP at the honest apiserver refused in status", func() error {
		return refusalIn(statusJSON(t, h.sock), rogue, ns, "apiserver", api.String())
	})
	// The daemon's watch of the honest cluster still works: a change
	// there is followed.
	nsH := namespace(t, h.honest, "after-capture")
	vip := service(t, h.honest, nsH, "web", hostilePorts)
	slice(t, h.honest, nsH, "web", "1", hostilePorts, []ep{readyEP(h.ip("h2"))})
	answeredByIn(t, h.l, url(vip, 80), 3, "h2")
	if c := clusterIn(statusJSON(t, h.sock), honest); c == nil || !c.Reachable {
		t.Errorf("the honest cluster in status: %+v", c)
	}
}

// reload makes the daemon run with the config data, as systemctl reload
// would after an edit of its file.
func (h *hostileLab) reload(t *testing.T, data []byte) {
	t.Helper()
	if err := os.WriteFile(h.cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	re := `configuration reloaded|reload refused`
	before := h.d.count(re)
	if err := h.d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the reload logged", func() error {
		if h.d.count(re) == before {
			return errors.New("no reload in the log yet")
		}
		return nil
	})
	if h.d.count(`reload refused`) > 0 {
		t.Fatalf("the daemon refused the reload:\n%s", data)
	}
}

// longNames: a namespace, a service and a port name at Kubernetes' limit
// of 63 characters, in a cluster whose name is at the config's limit, fit
// every rule comment; the restore that carries them carries the honest
// cluster's rules too (hole 10).
func (h *hostileLab) longNames(t *testing.T) {
	h.record(t)
	ns := namespace(t, h.rogue, "ns-"+strings.Repeat("n", 60))
	name := "svc-" + strings.Repeat("s", 59)
	ports := []port{{name: "port-" + strings.Repeat("p", 58), proto: corev1.ProtocolTCP, port: 80, target: 8080}}
	for _, s := range []string{ns, name, ports[0].name} {
		if len(s) != 63 {
			t.Fatalf("%q has %d characters, want 63", s, len(s))
		}
	}
	// A node port without endpoints: its reject rule has the longest
	// comment there is ("<key> node port has no endpoints").
	vip := service(t, h.rogue, ns, name, ports, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort })
	t.Cleanup(func() { h.deleteService(ns, name) })
	np := h.nodePort(t, ns, name)
	// Written after the long names: it answers only if the restore that
	// carries both went through.
	nsH := namespace(t, h.honest, "after-long-names")
	after := service(t, h.honest, nsH, "web", hostilePorts)
	slice(t, h.honest, nsH, "web", "1", hostilePorts, []ep{readyEP(h.ip("h1"))})
	answeredByIn(t, h.l, url(after, 80), 3, "h1")
	// And the long-named service itself is programmed: refused, at its
	// ClusterIP and, in a mode that serves node ports, at its node port.
	eventually(t, 20*time.Second, "the long-named service refused", func() error {
		if err := refusedIn(h.l, url(vip, 80)); err != nil || !can(t, config.CanNodePorts) {
			return err
		}
		return refusedIn(h.l, url(h.l.HostIP, int(np)))
	})
	comments, limit, ok := ruleComments(t, h.l, h.recorded)
	if ok {
		want := "svc-" + strings.Repeat("s", 8)
		seen := false
		for _, c := range comments {
			seen = seen || strings.Contains(c, want)
			if len(c) > limit {
				t.Errorf("a rule comment of %d bytes, over the %d the mode's tool takes (longer fails the transaction or is cut): %s", len(c), limit, c)
			}
		}
		if !seen {
			t.Errorf("no rule comment of the long-named service among %d", len(comments))
		}
	}
	h.intact(t)
}

// controlCharacters: a lying apiserver serves names with a terminal
// title change and a screen clear in them, and an endpoint address with a
// colour change; `kube-outpost status` and `explain` show the refusals
// without any raw control character, and so does the log (hole 6).
func (h *hostileLab) controlCharacters(t *testing.T) {
	ns := namespace(t, h.rogue, "esc-"+escMarker)
	name := "evil-" + escMarker
	vip := service(t, h.rogue, ns, name, hostilePorts)
	// Gone after this subtest: names no rule can carry must not stop the
	// later ones, whatever happens here.
	t.Cleanup(func() { h.deleteService(ns, name) })
	// 224.1.1.1 is refused as multicast; garbageIP reaches the daemon as
	// no address at all; r1 is fine.
	slice(t, h.rogue, ns, name, "1", hostilePorts, []ep{readyEP("224.1.1.1"), readyEP(garbageIP), readyEP(h.ip("r1"))})
	answeredByIn(t, h.l, url(vip, 80), 3, "r1")

	var refused string
	eventually(t, 30*time.Second, "the refusal of the lying objects in status", func() error {
		c := clusterIn(statusJSON(t, h.sock), rogue)
		if c == nil {
			return errors.New("no rogue cluster in status")
		}
		for _, r := range c.Refused {
			if strings.HasPrefix(r.Namespace, "esc-") && strings.Contains(r.Reason, "224.1.1.1") {
				refused = r.Namespace + "/" + r.Name + ": " + r.Reason
				return nil
			}
		}
		return fmt.Errorf("refusals: %+v", c.Refused)
	})
	if strings.Contains(refused, escMarker) {
		t.Fatalf("the liar did not lie: the daemon saw %q", refused)
	}
	t.Logf("the refusal as status --output json gives it: %q", refused)

	text, err := h.l.HostRun(context.Background(), binary, "status", "--socket", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "esc-") {
		t.Errorf("status does not show the refusal:\n%q", text)
	}
	noControl(t, "kube-outpost status", text)
	text, err = h.l.HostRun(context.Background(), binary, "explain", "--socket", h.sock, netip.AddrPortFrom(vip, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	noControl(t, "kube-outpost explain", text)
	noControl(t, "the daemon's log", h.d.log.String())
}

// noControl fails when text has a control character other than newline and
// tab: a terminal would act on it.
func noControl(t *testing.T, what, text string) {
	t.Helper()
	for i, r := range text {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			lo, hi := max(0, i-60), min(len(text), i+60)
			t.Errorf("%s has the control character %U at byte %d: %q", what, r, i, text[lo:hi])
			return
		}
	}
}

// clusterIPAtHostAddress: the host gains an address inside the rogue
// cluster's service range while the daemon runs, and the rogue admin
// gives a Service that address as its ClusterIP, on the host's SSH port.
// The host keeps its SSH, for itself and for its neighbour, and every
// other port of that address (hole 2).
func (h *hostileLab) clusterIPAtHostAddress(t *testing.T) {
	ctx := context.Background()
	if out, err := h.l.HostRun(ctx, "ip", "addr", "add", runtimeHostAddr.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ns := namespace(t, h.rogue, "grab")
	ports := []port{
		{name: "ssh", proto: corev1.ProtocolTCP, port: 22, target: 8080},
		{name: "ssh-alt", proto: corev1.ProtocolTCP, port: 2222, target: 8080},
	}
	t.Cleanup(func() {
		h.deleteService(ns, "ssh")
		h.l.HostRun(ctx, "ip", "addr", "del", runtimeHostAddr.String()+"/32", "dev", "eth0")
	})
	before := h.refusals(t)
	got := service(t, h.rogue, ns, "ssh", ports, func(s *corev1.Service) { s.Spec.ClusterIP = runtimeHostAddr.String() })
	if got != runtimeHostAddr {
		t.Fatalf("the apiserver gave the service %v, want %v", got, runtimeHostAddr)
	}
	slice(t, h.rogue, ns, "ssh", "1", ports, []ep{readyEP(h.ip("r1"))})
	h.marker(t, ns)
	h.answers(t, url(runtimeHostAddr, 22), "ssh")
	h.answers(t, url(runtimeHostAddr, 2222), "ssh-alt")
	h.neighbourAnswers(t, url(runtimeHostAddr, 22), "ssh")
	h.neighbourAnswers(t, url(runtimeHostAddr, 2222), "ssh-alt")
	if mentions(kernelStateIn(t, h.l), runtimeHostAddr) {
		t.Errorf("the kernel's state mentions the host's address %v:\n%s", runtimeHostAddr, kernelStateIn(t, h.l))
	}
	softly(t, 10*time.Second, "the ClusterIP at the host's address refused in status", func() error {
		return refusalIn(statusJSON(t, h.sock), rogue, ns, "ssh", runtimeHostAddr.String())
	})
	h.refusalsCounted(t, before, 1, reasonsHostVIP)
	h.warnedOnce(t, ns, "ssh")
	h.intact(t)
}

// limitsHold: a Service with 100 ports and 4,000 endpoints, far beyond
// the rogue cluster's limits, is refused beyond them, with the reason in
// status and metrics, and the honest cluster's changes still apply on
// time (hole 7).
func (h *hostileLab) limitsHold(t *testing.T) {
	if !h.limits {
		t.Fatal("this build's config does not know max_services, max_endpoints_per_port and max_endpoints")
	}
	ns := namespace(t, h.rogue, "big")
	var ports []port
	for i := range 100 { // an EndpointSlice carries at most 100 ports
		ports = append(ports, port{name: fmt.Sprintf("p%d", i), proto: corev1.ProtocolTCP, port: int32(1000 + i), target: 8080})
	}
	before := h.refusals(t)
	service(t, h.rogue, ns, "big", ports)
	for s := range 4 { // an EndpointSlice holds at most 1,000 endpoints
		var eps []ep
		for i := range 1000 {
			eps = append(eps, readyEP(fmt.Sprintf("10.244.%d.%d", 100+s*4+i/250, 1+i%250)))
		}
		slice(t, h.rogue, ns, "big", fmt.Sprint(s), ports, eps)
	}
	eventually(t, 60*time.Second, "the service beyond the limits refused in status", func() error {
		return refusalIn(statusJSON(t, h.sock), rogue, ns, "big", "max_endpoints")
	})
	// max_endpoints counts ports times endpoints, as the rules do.
	state := kernelStateIn(t, h.l)
	if n := strings.Count(state, "-j DNAT") + strings.Count(state, "  -> "); n > limitEndpoints+100 {
		t.Errorf("%d DNAT targets in the kernel, with the rogue cluster limited to %d endpoints", n, limitEndpoints)
	}
	h.refusalsCounted(t, before, 1, reasonsLimits)
	h.warnedOnce(t, ns, "big")
	if d := h.latency(t); d > 5*time.Second {
		t.Errorf("an honest change took %v to apply beside the rogue service", d)
	}
	h.intact(t)
}

// latency moves the honest cluster's web/moving to its other pod and
// returns the time from the EndpointSlice write to the first connection
// that reaches the new endpoint; 20 s when none does by then.
func (h *hostileLab) latency(t *testing.T) time.Duration {
	t.Helper()
	if !h.movingVIP.IsValid() {
		ns := namespace(t, h.honest, "moving")
		h.movingVIP, h.movingAt = service(t, h.honest, ns, "web", hostilePorts), "h2"
		slice(t, h.honest, ns, "web", "1", hostilePorts, []ep{readyEP(h.ip("h2"))})
		answeredByIn(t, h.l, url(h.movingVIP, 80), 3, "h2")
	}
	to := map[string]string{"h1": "h2", "h2": "h1"}[h.movingAt]
	took := changeLatency(t, h.l, h.honest, "moving", "web", hostilePorts, url(h.movingVIP, 80), h.ip(to), to)
	h.movingAt = to
	return took
}

// flood: the rogue cluster writes 10,000 objects at 32 at a time, while
// the honest cluster's change latency is measured; it stays within
// max(5 × its baseline, 3 s). A warning of the honest cluster written
// during the flood still reaches the log (holes 6 and 7). A containment
// check, not a benchmark: bounded in objects and in time.
func (h *hostileLab) flood(t *testing.T) {
	const (
		objects     = 10000
		services    = 200
		perSlice    = 5
		concurrency = 32
		budget      = 60 * time.Second
	)
	var base []time.Duration
	for range 3 {
		base = append(base, h.latency(t))
	}
	baseline := median(base)
	bound := max(5*baseline, 3*time.Second)
	t.Logf("baseline change latency %v (samples %v): the bound during the flood is %v", baseline, base, bound)

	ns := namespace(t, h.rogue, "flood")
	warnsBefore := h.d.count(`level=WARN.*cluster=` + rogue)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	var created, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	work := make(chan int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := floodObject(ctx, h.rogue, ns, i, services, perSlice); err != nil {
					if ctx.Err() == nil && failed.Add(1) == 1 {
						firstErr.Store(&err)
					}
					continue
				}
				created.Add(1)
			}
		}()
	}
	go func() {
		defer close(work)
		for i := range objects {
			select {
			case work <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	floodDone := make(chan struct{})
	go func() { wg.Wait(); close(floodDone) }()

	// The honest cluster during the flood: changes, and a warning of its own.
	begin := time.Now()
	nsH := namespace(t, h.honest, "during-flood")
	service(t, h.honest, nsH, "warned", hostilePorts)
	slice(t, h.honest, nsH, "warned", "1", hostilePorts, []ep{readyEP("224.1.1.3"), readyEP(h.ip("h1"))})
	var during []time.Duration
	for {
		during = append(during, h.latency(t))
		select {
		case <-floodDone:
		default:
			continue
		}
		break
	}
	<-floodDone
	took := time.Since(begin)
	t.Logf("the flood wrote %d objects (%d failed) in %v; change latency during it: %v", created.Load(), failed.Load(), took.Round(time.Millisecond), during)
	if p := firstErr.Load(); p != nil {
		t.Logf("first failed write: %v", *p)
	}
	if created.Load() < 1000 {
		t.Errorf("only %d objects written in %v: the flood did not happen", created.Load(), budget)
	}
	if m := median(during); m > bound {
		t.Errorf("the honest cluster's change latency during the flood: median %v of %v, over the bound %v (baseline %v)", m, during, bound, baseline)
	}
	eventually(t, 30*time.Second, "the honest cluster's warning during the flood in the log", func() error {
		if h.d.count(`level=WARN.*cluster=`+honest+` .*during-flood/warned`) == 0 {
			return errors.New("not logged: the flood hid it")
		}
		return nil
	})
	// The per-cluster rate limit (5 lines a second, bursts of 50, and a
	// summary every 10 s) keeps a flood of some 40 s well under this.
	if n := h.d.count(`level=WARN.*cluster=`+rogue) - warnsBefore; n > 500 {
		t.Errorf("the flood made %d warnings of the rogue cluster: its log is not rate-limited", n)
	}
	if h.limits {
		c := clusterIn(statusJSON(t, h.sock), rogue)
		if c == nil || c.Services > limitServices {
			t.Errorf("the rogue cluster has %+v programmed services, over its max_services %d", c, limitServices)
		}
	}
	select {
	case <-h.d.done:
		t.Fatal("the daemon exited during the flood")
	default:
	}
	h.intact(t)
}

// floodObject writes the i-th object of the flood: the first services
// are Services, the rest EndpointSlices spread over them, each with
// perSlice endpoints in the pod network (addresses no pod has).
func floodObject(ctx context.Context, c kubernetes.Interface, ns string, i, services, perSlice int) error {
	if i < services {
		_, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("f%d", i)},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
			}}},
		}, metav1.CreateOptions{})
		return err
	}
	svc := fmt.Sprintf("f%d", i%services)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("%s-%d", svc, i),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "kube-outpost-e2e"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for j := range perSlice {
		n := i*perSlice + j
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.244.%d.%d", 128+n/250%120, 1+n%250)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	_, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{})
	return err
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// untouched: after all of it, the host's routes are what they were, and
// everything it had still answers.
func (h *hostileLab) untouched(t *testing.T) {
	routes, err := h.l.HostRun(context.Background(), "ip", "route", "show", "table", "main")
	if err != nil {
		t.Fatal(err)
	}
	if routes != h.baselineRoutes {
		t.Errorf("the host's main routing table changed:\nbefore:\n%s\nafter:\n%s", h.baselineRoutes, routes)
	}
	h.intact(t)
}

// refusals returns the rogue cluster's kube_outpost_services_refused_total
// by reason.
func (h *hostileLab) refusals(t *testing.T) map[string]float64 {
	t.Helper()
	var out map[string]float64
	eventually(t, 10*time.Second, "scraping the metrics", func() error {
		resp, err := h.metrics.Get("http://127.0.0.1:10249/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		s, err := parseSamples(string(body))
		if err != nil {
			return err
		}
		out = map[string]float64{}
		prefix := fmt.Sprintf(`cluster=%q,reason=`, rogue)
		for labels, v := range s["kube_outpost_services_refused_total"] {
			if r, ok := strings.CutPrefix(labels, prefix); ok {
				out[strings.Trim(r, `"`)] = v
			}
		}
		return nil
	})
	return out
}

// refusalsCounted checks that the rogue cluster's refusals grew by at
// least n under the reasons want, and by nothing under "other".
func (h *hostileLab) refusalsCounted(t *testing.T, before map[string]float64, n int, want []string) {
	t.Helper()
	softly(t, 10*time.Second, "the refusals counted", func() error {
		after := h.refusals(t)
		grew := 0.0
		for _, r := range want {
			grew += after[r] - before[r]
		}
		if other := after["other"] - before["other"]; other > 0 {
			return fmt.Errorf("%v refusals counted as \"other\"; by reason before %v, after %v", other, before, after)
		}
		if grew < float64(n) {
			return fmt.Errorf("refusals under %v grew by %v, want %d; by reason before %v, after %v", want, grew, n, before, after)
		}
		return nil
	})
}

// warnedOnce checks that the daemon warned about ns/name in one log line:
// once the refusal is in status, a second sync must not repeat it.
func (h *hostileLab) warnedOnce(t *testing.T, ns, name string) {
	t.Helper()
	re := `level=WARN.*cluster=` + regexp.QuoteMeta(rogue) + ` .*service=` + regexp.QuoteMeta(ns+"/"+name) + `( |$)`
	time.Sleep(500 * time.Millisecond) // more than min_sync_period: a sync that would repeat it
	if n := h.d.count(re); n != 1 {
		t.Errorf("%d warnings about %s/%s in the log, want 1", n, ns, name)
	}
}

// marker writes a rogue service in ns, after the objects of a subtest,
// and waits until it answers: by then the daemon has seen those objects,
// since each resource's watch delivers in order.
func (h *hostileLab) marker(t *testing.T, ns string) {
	t.Helper()
	vip := service(t, h.rogue, ns, "zz-marker", hostilePorts)
	slice(t, h.rogue, ns, "zz-marker", "1", hostilePorts, []ep{readyEP(h.ip("r1"))})
	answeredByIn(t, h.l, url(vip, 80), 1, "r1")
}

// softly is eventually that goes on with the test when the time is up.
func softly(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: still failing after %s: %v", what, timeout, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deleteService deletes a rogue service and its slice <name>-1.
func (h *hostileLab) deleteService(ns, name string) {
	ctx := context.Background()
	h.rogue.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
	h.rogue.DiscoveryV1().EndpointSlices(ns).Delete(ctx, name+"-1", metav1.DeleteOptions{})
}

// trySlice is slice that returns the apiserver's error instead of failing.
func trySlice(c kubernetes.Interface, ns, svc string, ports []port, eps []ep) error {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: svc + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "kube-outpost-e2e"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.name), Protocol: ptr.To(p.proto), Port: ptr.To(p.target)})
	}
	for _, e := range eps {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready)}})
	}
	_, err := c.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), es, metav1.CreateOptions{})
	return err
}

// dnatTo says whether the kernel sends connections to ap: a DNAT rule in
// iptables or nftables mode, a real server in ipvs mode.
func dnatTo(state string, ap netip.AddrPort) bool {
	return strings.Contains(state, "--to-destination "+ap.String()) || strings.Contains(state, "  -> "+ap.String()+" ") ||
		strings.Contains(state, "dnat to "+ap.String())
}

// dnatFrom says whether the kernel captures connections to ap: a rule
// matching it in iptables mode, a map element in nftables mode, a virtual
// server in ipvs mode.
func dnatFrom(state string, ap netip.AddrPort) bool {
	return strings.Contains(state, fmt.Sprintf("-d %s/32 -p tcp -m tcp --dport %d", ap.Addr(), ap.Port())) ||
		strings.Contains(state, "TCP "+ap.String()+" ") || strings.Contains(state, fmt.Sprintf("%s . tcp . %d ", ap.Addr(), ap.Port()))
}

// serveBody answers every connection with an HTTP response whose body is
// body: a stand-in for a service of the host itself.
func serveBody(ln net.Listener, body string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			c.Read(buf)
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}()
	}
}
