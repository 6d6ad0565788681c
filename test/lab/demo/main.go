//go:build linux

// Command demo is what `make demo` runs: a lab of two clusters (real etcd and
// kube-apiserver in network namespaces), kube-outpost on an "outside host"
// namespace that is no node of either, and real curl, socat and iptables-save
// commands run there against the clusters' ClusterIPs. KEEP=0 tears the lab
// down at once even on a terminal.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
		say("\ndemo FAILED: %v", err)
		os.Exit(1)
	}
	say("\ndemo finished.")
}

func run() (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo creates network namespaces and needs root: sudo make demo")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	const bin = "bin/kube-outpost" // relative to root, which is every command's working directory
	if _, err := os.Stat(filepath.Join(root, bin)); err != nil {
		return fmt.Errorf("%s/%s is missing: run make demo, or build it with go build -o bin/kube-outpost ./cmd/kube-outpost", root, bin)
	}
	for _, tool := range []string{"ip", "iptables-save", "curl", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: run make demo, which installs what the demo needs", tool)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop() // registered first: a second Ctrl-C cannot cut the teardown short

	step("Starting a lab: clusters prod (10.96.0.0/16) and staging (10.97.0.0/16), each a real etcd + kube-apiserver")
	l, err := lab.Start(ctx, lab.Options{Log: &prefixWriter{prefix: "  "}, Clusters: []lab.ClusterOptions{
		{Name: "prod", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")},
		{Name: "staging", ServiceCIDR: netip.MustParsePrefix("10.97.0.0/16")},
	}})
	if err != nil {
		return err // Start has removed what it had built
	}
	defer func() {
		step("Tearing down the lab")
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing the lab: %w", cerr))
		} else {
			say("  deleted the namespaces %s-* and %s", l.ID, l.Dir)
		}
	}()
	host := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		cmd := l.HostCommand(ctx, name, args...)
		cmd.Dir = root
		return cmd
	}

	step("Adding pods: each answers HTTP on :8080 and UDP on :5353 with its name")
	pods := map[string]*lab.Pod{}
	for _, name := range []string{"web-1", "web-2", "web-3", "dns-1", "dns-2", "api-1"} {
		if pods[name], err = l.AddPod(ctx, name, []int{8080}, []int{5353}); err != nil {
			return err
		}
	}

	step("Creating Services and their EndpointSlices (no controller-manager runs: the demo writes the slices)")
	prod, staging := l.Cluster("prod").Admin, l.Cluster("staging").Admin
	ep := func(names ...string) (out []*lab.Pod) {
		for _, n := range names {
			out = append(out, pods[n])
		}
		return out
	}
	webIP, err := expose(ctx, prod, "prod", "web", "http", corev1.ProtocolTCP, 80, 8080, ep("web-1", "web-2", "web-3"))
	if err != nil {
		return err
	}
	dnsIP, err := expose(ctx, prod, "prod", "dns", "dns", corev1.ProtocolUDP, 53, 5353, ep("dns-1", "dns-2"))
	if err != nil {
		return err
	}
	apiIP, err := expose(ctx, staging, "staging", "api", "http", corev1.ProtocolTCP, 80, 8080, ep("api-1"))
	if err != nil {
		return err
	}

	step("Configuring kube-outpost for both clusters")
	cfg := filepath.Join(l.Dir, "config.toml")
	var b strings.Builder
	b.WriteString("mode = \"iptables\"\n")
	// The lab's, not this machine's /var/lib/kube-outpost.
	fmt.Fprintf(&b, "state_dir = %q\n", filepath.Join(l.Dir, "state"))
	for _, c := range l.Clusters {
		fmt.Fprintf(&b, "\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n", c.Name, c.Kubeconfig, c.ServiceCIDR)
	}
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return err
	}
	say("$ cat %s\n%s", cfg, indent(b.String()))
	if _, err := show(host(ctx, bin, "check-config", "--config", cfg), ""); err != nil {
		return err
	}

	step("Starting kube-outpost on the outside host (namespace %s, %s)", l.HostNS, l.HostIP)
	logs := &prefixWriter{prefix: "  kube-outpost | ", strip: regexp.MustCompile(`^time=\S+ `)}
	daemon := host(context.Background(), bin, "run", "--config", cfg)
	daemon.Stdout, daemon.Stderr = logs, logs
	daemon.SysProcAttr.Setpgid = true // Ctrl-C reaches only the demo, which stops it in order
	say("$ %s &", strings.Join(daemon.Args, " "))
	if err := daemon.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { daemon.Wait(); close(exited) }()
	defer func() {
		step("Stopping kube-outpost (SIGTERM) and removing its rules")
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			daemon.Process.Kill()
			<-exited
			err = errors.Join(err, errors.New("kube-outpost did not stop within 15s of SIGTERM; killed"))
		}
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, cerr := show(host(cctx, bin, "cleanup"), ""); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	step("Waiting for the ClusterIPs to answer from the outside host")
	begin := time.Now()
	for _, target := range []string{"http://" + webIP + "/", "http://" + apiIP + "/", "udp://" + dnsIP + ":53"} {
		for {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			var perr error
			if addr, ok := strings.CutPrefix(target, "udp://"); ok {
				_, perr = l.UDPRequest(pctx, addr, "ping")
			} else {
				_, perr = l.HTTPGet(pctx, target)
			}
			cancel()
			if perr == nil {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-exited:
				return fmt.Errorf("kube-outpost exited (%v); its log is above", daemon.ProcessState)
			case <-time.After(200 * time.Millisecond):
			}
			if time.Since(begin) > 30*time.Second {
				return fmt.Errorf("%s did not answer within 30s of starting kube-outpost: %v", target, perr)
			}
		}
	}
	say("  all answer, %s after kube-outpost started", time.Since(begin).Round(100*time.Millisecond))

	step("Real commands on the outside host, which is no node of either cluster")
	seen := map[string]bool{}
	for i := 0; i < 10 && (i < 4 || len(seen) < 2); i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		body, err := show(host(cctx, "curl", "-s", "http://"+webIP+"/"), "")
		cancel()
		if err != nil {
			return err
		}
		seen[strings.TrimSpace(body)] = true
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := show(host(cctx, "curl", "-s", "http://"+apiIP+"/"), ""); err != nil {
		return err
	}
	udp := host(cctx, "socat", "-", "UDP:"+dnsIP+":53")
	udp.Stdin = strings.NewReader("ping\n")
	if out, err := show(udp, "echo ping | "); err != nil || strings.TrimSpace(out) == "" {
		return fmt.Errorf("no answer to the UDP request to %s:53 (%v)", dnsIP, err)
	}
	nat, err := host(cctx, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return fmt.Errorf("iptables-save: %w", err)
	}
	chain := regexp.MustCompile(`"prod/shop/web:http" -j (OUTPOST-S-\S+)`).FindStringSubmatch(string(nat))
	if chain == nil {
		return errors.New("iptables-save -t nat shows no rule for prod/shop/web")
	}
	grep := []string{"^-A OUTPOST-SERVICES ", "shop/web:http", "^-A " + chain[1] + " "}
	say("# the rules a connection to shop/web meets: its cluster's range, its ClusterIP:port, a random pod")
	say("$ ip netns exec %s iptables-save -t nat | grep -e '%s'", l.HostNS, strings.Join(grep, "' -e '"))
	match := regexp.MustCompile(strings.Join(grep, "|"))
	for _, line := range strings.Split(string(nat), "\n") {
		if match.MatchString(line) {
			say("  %s", line)
		}
	}

	if isTerminal(os.Stdin) && os.Getenv("KEEP") != "0" {
		step("The lab is running")
		say("In another terminal try:\n\n  sudo ip netns exec %s curl http://%s/\n  sudo ip netns exec %s curl http://%s/\n  sudo ip netns exec %s iptables-save -t nat\n",
			l.HostNS, webIP, l.HostNS, apiIP, l.HostNS)
		say("Press Ctrl-C to stop kube-outpost and tear the lab down (KEEP=0 make demo skips this pause).")
		select {
		case <-ctx.Done():
		case <-exited:
			return fmt.Errorf("kube-outpost exited (%v); its log is above", daemon.ProcessState)
		}
	}
	return nil
}

// expose creates namespace shop, a ClusterIP Service with one port, and the
// EndpointSlice the EndpointSlice controller would write for it. It returns
// the ClusterIP the apiserver allocated.
func expose(ctx context.Context, c kubernetes.Interface, cluster, name, port string, proto corev1.Protocol, svcPort, target int32, pods []*lab.Pod) (string, error) {
	const ns = "shop"
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("%s: namespace %s: %w", cluster, ns, err)
	}
	svc, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: port, Protocol: proto, Port: svcPort, TargetPort: intstr.FromInt32(target)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: service %s/%s: %w", cluster, ns, name, err)
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-demo", Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "kube-outpost-demo",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(port), Protocol: ptr.To(proto), Port: ptr.To(target)}},
	}
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}})
	}
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("%s: EndpointSlice %s/%s: %w", cluster, ns, es.Name, err)
	}
	say("  %-7s  service %s/%s  ClusterIP %-15s %d/%s -> %s on :%d", cluster, ns, name, svc.Spec.ClusterIP, svcPort, proto, strings.Join(names, ", "), target)
	return svc.Spec.ClusterIP, nil
}

// show prints cmd as a shell line (after pre, e.g. "echo ping | "), runs it
// and prints its indented combined output, which it returns.
func show(cmd *exec.Cmd, pre string) (string, error) {
	say("$ %s%s", pre, strings.Join(cmd.Args, " "))
	out, err := cmd.CombinedOutput()
	if s := strings.TrimRight(string(out), "\n"); s != "" {
		say("%s", indent(s))
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return string(out), nil
}

var outMu sync.Mutex // one line at a time on stdout, whoever writes

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

func step(format string, args ...any) { say("\n==> "+format, args...) }

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// prefixWriter prints every complete line written to it after prefix,
// without what strip matches.
type prefixWriter struct {
	prefix string
	strip  *regexp.Regexp
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if w.strip != nil {
			line = w.strip.ReplaceAllString(line, "")
		}
		say("%s%s", w.prefix, line)
	}
}

func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// repoRoot walks up from the working directory to the directory with go.mod.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: run the demo from the kube-outpost repository (make demo)", wd)
		}
	}
}
