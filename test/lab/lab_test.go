//go:build e2e && linux

package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// testLog sends the lab's progress lines to the test log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	begin := time.Now()
	l, err := lab.Start(ctx, lab.Options{
		Clusters: []lab.ClusterOptions{
			{Name: "alpha", ServiceCIDR: mustPrefix("10.96.0.0/16")},
			{Name: "beta", ServiceCIDR: mustPrefix("10.97.0.0/16")},
		},
		Log: testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	t.Logf("Start took %s", time.Since(begin).Round(100*time.Millisecond))

	alpha, beta := l.Cluster("alpha"), l.Cluster("beta")
	if alpha == nil || beta == nil || l.Cluster("gamma") != nil {
		t.Fatalf("Cluster lookup: alpha=%v beta=%v", alpha, beta)
	}

	t.Run("topology", func(t *testing.T) {
		nss := labNetns(t, l.ID)
		for _, want := range []string{l.ID + "-router", l.HostNS, l.ID + "-api-alpha", l.ID + "-api-beta"} {
			if !slices.Contains(nss, want) {
				t.Errorf("netns %s missing; have %v", want, nss)
			}
		}
		for _, ns := range nss {
			out, err := exec.Command("ip", "-n", ns, "route", "show", "default").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("netns %s: default route %q (err %v); the lab must have none", ns, out, err)
			}
		}
		// Bridges with addresses of their own: one taken from a port would
		// change as ports come and go, and cut off whoever cached it.
		for _, br := range []string{"infra", "pods"} {
			checkOwnMAC(t, l.ID+"-router", br)
		}
		routes, err := l.HostRun(ctx, "ip", "route")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"10.96.0.0/16 via 10.250.0.1", "10.97.0.0/16 via 10.250.0.1", "10.244.0.0/16 via 10.250.0.1"} {
			if !strings.Contains(routes, want) {
				t.Errorf("host routes lack %q:\n%s", want, routes)
			}
		}
	})

	pods := map[string]*lab.Pod{}
	for _, name := range []string{"web-1", "web-2"} {
		p, err := l.AddPod(ctx, name, []int{8080}, []int{5353})
		if err != nil {
			t.Fatal(err)
		}
		pods[name] = p
	}
	if _, err := l.AddPod(ctx, "web-1", nil, nil); err == nil {
		t.Error("AddPod with an existing name succeeded")
	}

	t.Run("pods", func(t *testing.T) {
		if l.HostIPv6.IsValid() {
			t.Errorf("HostIPv6 = %v in a lab without IPv6", l.HostIPv6)
		}
		for name, p := range pods {
			if !p.IP.IsValid() || !strings.HasPrefix(p.IP.String(), "10.244.1.") {
				t.Errorf("pod %s: address %v", name, p.IP)
			}
			if p.IPv6.IsValid() {
				t.Errorf("pod %s: IPv6 %v in a lab without IPv6", name, p.IPv6)
			}
			url := "http://" + p.IP.String() + ":8080/anything"
			if body, err := l.HTTPGet(ctx, url); err != nil || body != name {
				t.Errorf("HTTPGet %s = %q, %v; want %q", url, body, err, name)
			}
			if got, err := l.UDPRequest(ctx, p.IP.String()+":5353", "ping"); err != nil || got != name {
				t.Errorf("UDPRequest %s = %q, %v; want %q", p.IP, got, err, name)
			}
			// A real process in the host namespace sees the same, and the pod
			// sees the host's own address as the source (plain routing, no NAT).
			out, err := l.HostRun(ctx, "curl", "-sS", "-D", "-", "--max-time", "10", url)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "X-Pod: "+name) || !strings.Contains(out, "X-Remote-Addr: "+l.HostIP.String()+":") {
				t.Errorf("curl from host:\n%s", out)
			}
		}
	})

	t.Run("node", func(t *testing.T) {
		infraMAC := linkMAC(t, l.ID+"-router", "infra")
		n, err := l.AddNode(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		checkOwnMAC(t, n.NS, "pods")
		// The node's veth joining infra changes nothing for the host, which
		// still reaches the router (and the pods) at the address it cached.
		if got := linkMAC(t, l.ID+"-router", "infra"); got != infraMAC {
			t.Errorf("router's infra address %s became %s when the node joined", infraMAC, got)
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		body, err := l.HTTPGet(c, "http://"+pods["web-1"].IP.String()+":8080/")
		cancel()
		if err != nil || body != "web-1" {
			t.Errorf("web-1 through the router after the node joined: %q, %v", body, err)
		}
		p, err := n.AddPod(ctx, "np1", []int{8080}, []int{5353})
		if err != nil {
			t.Fatal(err)
		}
		if !n.PodCIDR.Contains(p.IP) || n.PodCIDR.Addr().Next() == p.IP {
			t.Fatalf("pod %v not on node subnet %v (or on the node's own address)", p.IP, n.PodCIDR)
		}
		url := "http://" + p.IP.String() + ":8080/"
		// Nothing routes the node's pod subnet: unreachable from the host.
		c, cancel = context.WithTimeout(ctx, 2*time.Second)
		if _, err := l.HTTPGet(c, url); err == nil {
			t.Fatal("a pod behind a node answers the host without a route")
		}
		cancel()
		// Through the node's NodePort.
		if err := n.ForwardNodePort("tcp", 30080, netip.AddrPortFrom(p.IP, 8080)); err != nil {
			t.Fatal(err)
		}
		if err := n.ForwardNodePort("udp", 30053, netip.AddrPortFrom(p.IP, 5353)); err != nil {
			t.Fatal(err)
		}
		if body, err := l.HTTPGet(ctx, fmt.Sprintf("http://%s:30080/", n.IP)); err != nil || body != "np1" {
			t.Fatalf("via NodePort: %q, %v", body, err)
		}
		if body, err := l.UDPRequest(ctx, fmt.Sprintf("%s:30053", n.IP), "ping"); err != nil || body != "np1" {
			t.Fatalf("UDP via NodePort: %q, %v", body, err)
		}
		// With a route via the node, directly.
		if _, err := l.HostRun(ctx, "ip", "route", "add", n.PodCIDR.String(), "via", n.IP.String()); err != nil {
			t.Fatal(err)
		}
		defer l.HostRun(ctx, "ip", "route", "del", n.PodCIDR.String())
		if body, err := l.HTTPGet(ctx, url); err != nil || body != "np1" {
			t.Fatalf("via a route: %q, %v", body, err)
		}
		if err := l.RemovePod("np1"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("routed-client", func(t *testing.T) {
		c, err := l.AddRoutedClient(ctx, "legacy")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddRoutedClient(ctx, "legacy"); err == nil {
			t.Error("AddRoutedClient with an existing name succeeded")
		}
		if c.NS != l.ID+"-client-legacy" || !slices.Contains(labNetns(t, l.ID), c.NS) {
			t.Errorf("client netns %q missing", c.NS)
		}
		if !strings.HasPrefix(c.IP.String(), "10.251.") || !netip.PrefixFrom(c.Gateway, 30).Masked().Contains(c.IP) {
			t.Errorf("client %v, gateway %v", c.IP, c.Gateway)
		}
		out, err := exec.Command("ip", "-n", c.NS, "route").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		routes := string(out)
		for _, p := range []string{"10.96.0.0/16", "10.97.0.0/16", "10.244.0.0/16"} {
			if want := p + " via " + c.Gateway.String(); !strings.Contains(routes, want) {
				t.Errorf("client routes lack %q:\n%s", want, routes)
			}
		}
		if strings.Contains(routes, "default") {
			t.Errorf("client has a default route:\n%s", routes)
		}
		if fwd, err := l.HostRun(ctx, "sysctl", "-n", "net.ipv4.ip_forward"); err != nil || strings.TrimSpace(fwd) != "1" {
			t.Errorf("host ip_forward = %q, %v; want 1", fwd, err)
		}
		// The link works: the host answers a connection to a closed port
		// with a RST.
		if conn, err := c.Dial(ctx, "tcp", netip.AddrPortFrom(c.Gateway, 1).String()); !errors.Is(err, syscall.ECONNREFUSED) {
			if conn != nil {
				conn.Close()
			}
			t.Errorf("dial host side from client: %v, want connection refused", err)
		}
		// Nothing routes back: a pod can answer the client only through
		// masquerading on the host.
		if out, err := exec.Command("ip", "-n", l.ID+"-pod-web-1", "route", "get", c.IP.String()).CombinedOutput(); err == nil {
			t.Errorf("pod web-1 has a route to the client: %s", out)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("client Close: %v", err)
		}
		if slices.Contains(labNetns(t, l.ID), c.NS) {
			t.Error("client netns still there after its Close")
		}
		if out, err := l.HostRun(ctx, "ip", "-o", "addr"); err != nil || strings.Contains(out, c.Gateway.String()) {
			t.Errorf("host still has the client link after its Close: %v\n%s", err, out)
		}
		// One more, left for the Lab's Close to sweep.
		c2, err := l.AddRoutedClient(ctx, "legacy-2")
		if err != nil {
			t.Fatal(err)
		}
		if c2.IP == c.IP {
			t.Errorf("second client reuses %v", c.IP)
		}
	})

	t.Run("kubeconfig", func(t *testing.T) {
		for _, c := range l.Clusters {
			checkKubeconfig(ctx, t, l, c)
		}
	})

	t.Run("tls-verified", func(t *testing.T) {
		// alpha's kubeconfig pointed at beta's apiserver must fail: each cluster
		// has its own CA and the client really verifies the chain.
		cfg, err := clientcmd.LoadFromFile(alpha.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Clusters["alpha"].Server = "https://" + beta.APIServerIP.String() + ":6443"
		path := filepath.Join(t.TempDir(), "crossed")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			t.Fatal(err)
		}
		cs, err := l.ClientFromKubeconfig(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("alpha's CA against beta's apiserver: err = %v, want a certificate error", err)
		}
	})

	t.Run("apiserver-restart", func(t *testing.T) {
		svc, err := alpha.Admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "survivor"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ip := mustAddr(t, svc.Spec.ClusterIP); !alpha.ServiceCIDR.Contains(ip) {
			t.Errorf("ClusterIP %v outside %v", ip, alpha.ServiceCIDR)
		}
		if err := alpha.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = alpha.Admin.CoreV1().Services("default").Get(sctx, "survivor", metav1.GetOptions{})
		scancel()
		if err == nil {
			t.Error("alpha answered while stopped")
		}
		if _, err := beta.Admin.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("beta while alpha is stopped: %v", err)
		}
		if err := alpha.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := alpha.Admin.CoreV1().Services("default").Get(ctx, "survivor", metav1.GetOptions{})
		if err != nil || got.Spec.ClusterIP != svc.Spec.ClusterIP {
			t.Errorf("after restart: %v, %v (etcd should have kept the service)", got, err)
		}
		// The ServiceAccount token stays valid across the restart.
		cs, err := l.ClientFromKubeconfig(alpha.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("kube-outpost token after restart: %v", err)
		}
	})

	t.Run("remove-pod", func(t *testing.T) {
		podsMAC := linkMAC(t, l.ID+"-router", "pods")
		if err := l.RemovePod("web-2"); err != nil {
			t.Fatal(err)
		}
		// web-1 still reaches the router at the address it cached.
		if got := linkMAC(t, l.ID+"-router", "pods"); got != podsMAC {
			t.Errorf("router's pods address %s became %s when web-2 left", podsMAC, got)
		}
		if slices.Contains(labNetns(t, l.ID), l.ID+"-pod-web-2") {
			t.Error("netns of web-2 still there")
		}
		gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
		defer gcancel()
		if body, err := l.HTTPGet(gctx, "http://"+pods["web-2"].IP.String()+":8080/"); err == nil {
			t.Errorf("removed pod answered %q", body)
		} else {
			t.Logf("removed pod: %v", err)
		}
		if body, err := l.HTTPGet(ctx, "http://"+pods["web-1"].IP.String()+":8080/"); err != nil || body != "web-1" {
			t.Errorf("web-1 after removing web-2: %q, %v", body, err)
		}
		if err := l.RemovePod("web-2"); err == nil {
			t.Error("second RemovePod succeeded")
		}
	})

	t.Run("off-host", func(t *testing.T) {
		meta := netip.MustParseAddr("100.100.100.200")
		if _, err := l.AddOffHost(ctx, "bad", 80, netip.MustParseAddr("10.244.9.9")); err == nil {
			t.Error("AddOffHost with a pod address succeeded")
		}
		o, err := l.AddOffHost(ctx, "meta", 80, meta)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(labNetns(t, l.ID), o.NS) {
			t.Errorf("netns %s missing", o.NS)
		}
		if err := l.ServeOnGateway(80, "gw"); err != nil {
			t.Fatal(err)
		}
		// Without a default route the host cannot reach it: it is off-host.
		gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = l.HTTPGet(gctx, "http://"+meta.String()+"/")
		gcancel()
		if err == nil {
			t.Error("the off-host address answered a host without a default route")
		}
		if err := l.AddHostDefaultRoute(); err != nil {
			t.Fatal(err)
		}
		defer l.HostRun(ctx, "ip", "route", "del", "default")
		if out, err := l.HostRun(ctx, "ip", "route", "get", meta.String()); err != nil || !strings.Contains(out, "via "+l.Gateway().String()) {
			t.Errorf("the host's route to %v: %q, %v; want via the gateway", meta, out, err)
		}
		if body, err := l.HTTPGet(ctx, "http://"+meta.String()+"/"); err != nil || body != "meta" {
			t.Errorf("%v through the default route: %q, %v", meta, body, err)
		}
		if body, err := l.HTTPGet(ctx, "http://"+l.Gateway().String()+"/"); err != nil || body != "gw" {
			t.Errorf("the gateway: %q, %v", body, err)
		}
	})

	t.Run("liar", func(t *testing.T) {
		liar, err := alpha.Liar(map[string]string{"liar-": `liar\u001b-`})
		if err != nil {
			t.Fatal(err)
		}
		cs, err := l.ClientFromKubeconfig(liar.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		w, err := cs.CoreV1().Services("default").Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if _, err := alpha.Admin.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "liar-watched"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		list, err := cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range list.Items {
			names = append(names, s.Name)
		}
		if !slices.Contains(names, "liar\x1b-watched") || !slices.Contains(names, "kubernetes") {
			t.Errorf("listed through the liar: %q, want the rewritten liar\\x1b-watched and kubernetes as it is", names)
		}
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev := <-w.ResultChan():
				if s, ok := ev.Object.(*corev1.Service); ok && s.Name == "liar\x1b-watched" {
					return
				}
			case <-timeout:
				t.Fatal("no rewritten watch event within 10s")
			}
		}
	})

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if left := labNetns(t, l.ID); len(left) > 0 {
		t.Errorf("netns left after Close: %v", left)
	}
	if os.Getenv("KO_LAB_KEEP") != "1" {
		if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Close (err %v)", l.Dir, err)
		}
	}
	if pids := processesMentioning(l.Dir); len(pids) > 0 {
		t.Errorf("processes of the lab still running after Close: %v", pids)
	}
}

// TestStartFailure checks that a failing Start removes what it created, and that
// Start removes the leftovers of labs whose process died.
func TestStartFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dead := unusedPid(t)
	staleNS := fmt.Sprintf("ko%d-host", dead)
	if out, err := exec.Command("ip", "netns", "add", staleNS).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", staleNS).Run() })
	staleDir := filepath.Join(os.TempDir(), fmt.Sprintf("ko%d-123", dead))
	if err := os.MkdirAll(staleDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(staleDir) })
	if err := os.WriteFile(filepath.Join(staleDir, ".kube-outpost-lab"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	// Binaries that fail at once, so Start fails after the network is built.
	bin := t.TempDir()
	for _, name := range []string{"etcd", "kube-apiserver"} {
		script := "#!/bin/sh\necho 'fake " + name + ": boom' >&2\nexit 3\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KO_LAB_BIN", bin)
	before := time.Now()
	l, err := lab.Start(ctx, lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "alpha", ServiceCIDR: mustPrefix("10.96.0.0/16")}},
		Log:      testLog{t},
	})
	if err == nil {
		l.Close()
		t.Fatal("Start with a failing etcd succeeded")
	}
	if !strings.Contains(err.Error(), "fake etcd: boom") {
		t.Errorf("error lacks the log tail of etcd: %v", err)
	}
	t.Logf("Start failed as expected after %s: %v", time.Since(before).Round(100*time.Millisecond), err)

	ours := fmt.Sprintf("ko%d", os.Getpid())
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			if strings.HasPrefix(f[0], ours+"-") || strings.HasPrefix(f[0], ours+"x") || f[0] == staleNS {
				t.Errorf("netns %s left behind", f[0])
			}
		}
	}
	if _, err := os.Stat(staleDir); !os.IsNotExist(err) {
		t.Errorf("stale lab dir %s not removed (err %v)", staleDir, err)
	}
	if os.Getenv("KO_LAB_KEEP") != "1" {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), ours+"*"))
		for _, d := range dirs {
			if st, err := os.Stat(d); err == nil && st.ModTime().After(before) {
				t.Errorf("dir %s of the failed lab left behind", d)
			}
		}
	}
}

// unusedPid returns a pid no process has.
func unusedPid(t *testing.T) int {
	for pid := 4000000; pid > 1000; pid-- {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return pid
		}
	}
	t.Fatal("no unused pid")
	return 0
}

// checkKubeconfig verifies that the kube-outpost kubeconfig has exactly the
// rights of packaging/rbac.yaml, over a verified TLS connection.
func checkKubeconfig(ctx context.Context, t *testing.T, l *lab.Lab, c *lab.Cluster) {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cl := cfg.Clusters[c.Name]
	if cfg.CurrentContext != c.Name || cl == nil {
		t.Fatalf("%s: current context %q, clusters %v", c.Kubeconfig, cfg.CurrentContext, cfg.Clusters)
	}
	if want := "https://" + c.APIServerIP.String() + ":6443"; cl.Server != want || cl.InsecureSkipTLSVerify || len(cl.CertificateAuthorityData) == 0 {
		t.Errorf("%s: server %q (want %q), insecure %v, CA %d bytes", c.Name, cl.Server, want, cl.InsecureSkipTLSVerify, len(cl.CertificateAuthorityData))
	}

	var cs kubernetes.Interface
	if cs, err = l.ClientFromKubeconfig(c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("%s: list services: %v", c.Name, err)
	} else if len(svcs.Items) == 0 {
		t.Errorf("%s: no services (want at least default/kubernetes)", c.Name)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("%s: list endpointslices: %v", c.Name, err)
	}
	w, err := cs.DiscoveryV1().EndpointSlices("").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("%s: watch endpointslices: %v", c.Name, err)
	} else {
		w.Stop()
	}
	_, err = cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "forbidden"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: create service: err = %v, want Forbidden", c.Name, err)
	}
	if _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("%s: list pods: err = %v, want Forbidden", c.Name, err)
	}
}

// linkMAC returns the MAC address of dev in namespace ns.
func linkMAC(t *testing.T, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-br", "link", "show", "dev", dev).CombinedOutput()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 3 {
		t.Fatalf("ip -n %s link show dev %s: %v: %s", ns, dev, err, out)
	}
	return f[2] // "infra UP 02:00:0a:fa:00:01 <BROADCAST,...>"
}

// checkOwnMAC checks that bridge br in namespace ns has a MAC address set
// for it (addr_assign_type 3, NET_ADDR_SET), not one taken from a port.
func checkOwnMAC(t *testing.T, ns, br string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/"+br+"/addr_assign_type").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "3" {
		t.Errorf("bridge %s in %s: addr_assign_type %q (%v), want 3: an address of its own", br, ns, out, err)
	}
}

func labNetns(t *testing.T, id string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], id+"-") {
			names = append(names, f[0])
		}
	}
	return names
}

// processesMentioning lists pids whose command line contains s (the lab's
// processes all carry paths under Dir in their arguments).
func processesMentioning(s string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
