//go:build linux

package lab

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

const (
	apiserverPort = 6443
	// readyTimeout bounds the wait for /readyz; a cold apiserver on 2 cores
	// takes 10-20 s, more when several start at once.
	readyTimeout = 90 * time.Second
	// The namespace and ServiceAccount that packaging/rbac.yaml creates.
	outpostNamespace      = "kube-outpost"
	outpostServiceAccount = "kube-outpost"
	outpostTokenTTL       = 48 * time.Hour
)

// Cluster is one etcd + kube-apiserver pair in its own namespace. There is no
// controller-manager and no scheduler: tests create Services and EndpointSlices
// themselves (ClusterIPs and NodePorts are still allocated by the apiserver).
type Cluster struct {
	Name        string
	ServiceCIDR netip.Prefix
	// ServiceCIDRv6 is the IPv6 service range of a dual-stack cluster;
	// invalid (zero) for an IPv4-only one.
	ServiceCIDRv6 netip.Prefix
	APIServerIP   netip.Addr
	// Admin is authorized as system:masters and dials from the lab's host netns.
	Admin kubernetes.Interface
	// Kubeconfig is the file to give kube-outpost: the token of ServiceAccount
	// kube-outpost/kube-outpost, bound by packaging/rbac.yaml only.
	Kubeconfig string
	// AdminKubeconfig holds the admin token, for poking at a kept lab by hand
	// (`ip netns exec <HostNS> kubectl --kubeconfig ...`).
	AdminKubeconfig string
	// CAFile is the PEM of this cluster's CA, which signed the apiserver's
	// serving certificate (each cluster has its own CA).
	CAFile string

	lab        *Lab
	ns         string
	dir        string
	adminToken string
	caPEM      []byte

	mu        sync.Mutex // guards apiserver and etcd
	etcd      *process
	apiserver *process
}

func (c *Cluster) url() string {
	return "https://" + net.JoinHostPort(c.APIServerIP.String(), fmt.Sprint(apiserverPort))
}

func (c *Cluster) logf(format string, args ...any) {
	c.lab.logf("cluster "+c.Name+": "+format, args...)
}

// setup runs in parallel for all clusters once the network exists: credentials,
// etcd, apiserver, then the kube-outpost RBAC and kubeconfig.
func (c *Cluster) setup(ctx context.Context) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	if err := c.writeCredentials(); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	var err error
	if c.Admin, err = kubernetes.NewForConfig(c.lab.restConfig(c.url(), c.caPEM, c.adminToken)); err != nil {
		return err
	}
	if err := writeKubeconfig(c.AdminKubeconfig, c.Name, "admin@"+c.Name, c.url(), c.caPEM, c.adminToken); err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return err
	}
	if err := c.applyOutpostRBAC(ctx); err != nil {
		return fmt.Errorf("apply packaging/rbac.yaml: %w", err)
	}
	return c.writeOutpostKubeconfig(ctx)
}

// writeCredentials creates the cluster's CA, the apiserver serving certificate,
// the ServiceAccount signing key and the static token file with the admin token.
func (c *Cluster) writeCredentials() error {
	caCert, caKey, err := newCA("kube-outpost-lab " + c.lab.ID + " " + c.Name + " CA")
	if err != nil {
		return err
	}
	c.caPEM = pemCert(caCert.Raw)
	if err := os.WriteFile(c.CAFile, c.caPEM, 0o644); err != nil {
		return err
	}
	// The names and addresses a real apiserver certificate carries, so that a
	// client reaching it through the `kubernetes` Service's ClusterIP (the first
	// address of the service range) also verifies.
	firstServiceIP := c.ServiceCIDR.Masked().Addr().Next()
	ips := []net.IP{c.APIServerIP.AsSlice(), firstServiceIP.AsSlice(), net.IPv4(127, 0, 0, 1)}
	if c.ServiceCIDRv6.IsValid() {
		ips = append(ips, c.ServiceCIDRv6.Masked().Addr().Next().AsSlice())
	}
	dns := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	certPEM, keyPEM, err := newServingCert(caCert, caKey, "kube-apiserver", ips, dns)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "apiserver.crt"), certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "apiserver.key"), keyPEM, 0o600); err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})
	if err := os.WriteFile(filepath.Join(c.dir, "sa.key"), saPEM, 0o600); err != nil {
		return err
	}
	c.adminToken = randomHex(16)
	tokens := fmt.Sprintf("%s,lab-admin,lab-admin-uid,\"system:masters\"\n", c.adminToken)
	return os.WriteFile(filepath.Join(c.dir, "tokens.csv"), []byte(tokens), 0o600)
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	const peer, client = "http://127.0.0.1:2380", "http://127.0.0.1:2379"
	p, err := startProcess(c.ns, "etcd "+c.Name, filepath.Join(c.dir, "etcd.log"), filepath.Join(c.lab.binDir, "etcd"),
		"--name="+c.Name,
		"--data-dir="+filepath.Join(c.dir, "etcd-data"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster="+c.Name+"="+peer,
		// Lab data is thrown away; fsync only costs time on a busy disk.
		"--unsafe-no-fsync",
	)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.etcd = p
	c.mu.Unlock()

	// etcd listens on the namespace's own loopback, so probe it from there.
	hc := &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, c.ns, network, addr)
		},
		DisableKeepAlives: true,
	}}
	return poll(ctx, 30*time.Second, p, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s: %s", resp.Status, body)
		}
		return nil
	})
}

// StartAPIServer starts kube-apiserver (again) and waits until /readyz is ok.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.lab.remote != "" {
		_, err := c.lab.control(ctx, "/clusters/"+c.Name+"/apiserver/start")
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver != nil && !c.apiserver.exited() {
		return fmt.Errorf("apiserver of cluster %s is already running", c.Name)
	}
	d := c.dir
	ranges := c.ServiceCIDR.String()
	if c.ServiceCIDRv6.IsValid() {
		ranges += "," + c.ServiceCIDRv6.String() // dual-stack, IPv4 primary
	}
	p, err := startProcess(c.ns, "kube-apiserver "+c.Name, filepath.Join(d, "apiserver.log"), filepath.Join(c.lab.binDir, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+c.APIServerIP.String(),
		"--advertise-address="+c.APIServerIP.String(),
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--service-cluster-ip-range="+ranges,
		"--token-auth-file="+filepath.Join(d, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--cert-dir="+filepath.Join(d, "certs"),
		"--tls-cert-file="+filepath.Join(d, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(d, "apiserver.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(d, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(d, "sa.key"),
	)
	if err != nil {
		return err
	}
	c.apiserver = p
	c.logf("kube-apiserver started (pid %d), waiting for /readyz", p.cmd.Process.Pid)
	start := time.Now()
	// Probed with the admin client, i.e. from the host namespace through the
	// router bridge: ready also means reachable the way kube-outpost reaches it.
	rc := c.Admin.Discovery().RESTClient()
	err = poll(ctx, readyTimeout, p, func(ctx context.Context) error {
		_, err := rc.Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster %s: kube-apiserver not ready: %w\n%s", c.Name, err, tailFile(p.logPath, 40))
	}
	c.logf("kube-apiserver ready after %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// StopAPIServer kills kube-apiserver and waits for it to exit; etcd
// keeps running so that StartAPIServer brings back the same state.
func (c *Cluster) StopAPIServer() error {
	if c.lab.remote != "" {
		_, err := c.lab.control(context.Background(), "/clusters/"+c.Name+"/apiserver/stop")
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil || c.apiserver.exited() {
		return fmt.Errorf("apiserver of cluster %s is not running", c.Name)
	}
	// SIGKILL: an outage is abrupt, and a graceful stop would wait for the
	// watches of every client (kube-outpost's included) to end.
	return c.apiserver.stop(syscall.SIGKILL, 10*time.Second)
}

// APIServerPid is the process id of the running kube-apiserver (`ip netns
// exec` execs it, so /proc/<pid> is the apiserver's own), or 0 when none
// runs.
func (c *Cluster) APIServerPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil || c.apiserver.exited() {
		return 0
	}
	return c.apiserver.cmd.Process.Pid
}

// kill stops both processes; used by Lab.Close.
func (c *Cluster) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range []*process{c.apiserver, c.etcd} {
		if p != nil {
			_ = p.stop(syscall.SIGKILL, 10*time.Second)
		}
	}
}

// poll calls try until it succeeds, the timeout passes, ctx ends or p exits.
// Each attempt gets a short deadline so a hung connection cannot eat the budget.
func poll(ctx context.Context, timeout time.Duration, p *process, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			return p.exitError()
		}
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		last = try(actx)
		acancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-p.done:
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// applyOutpostRBAC creates every object of packaging/rbac.yaml with the admin
// client, so the lab tests exactly the RBAC that is shipped.
func (c *Cluster) applyOutpostRBAC(ctx context.Context) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(root, "packaging", "rbac.yaml"))
	if err != nil {
		return err
	}
	return applyManifest(ctx, c.Admin, data)
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// applyManifest creates the objects of a multi-document YAML. Only the kinds an
// RBAC manifest uses are known; anything else is an error rather than silently
// skipped, so a change to rbac.yaml cannot go untested.
func applyManifest(ctx context.Context, cs kubernetes.Interface, data []byte) error {
	for i, doc := range docSeparator.Split(string(data), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if tm.Kind == "" {
			continue // comments only
		}
		var err error
		switch tm.Kind {
		case "Namespace":
			err = create(ctx, doc, cs.CoreV1().Namespaces().Create)
		case "ServiceAccount":
			err = createNamespaced(ctx, doc, func(ns string) createFunc[*corev1.ServiceAccount] {
				return cs.CoreV1().ServiceAccounts(ns).Create
			})
		case "ClusterRole":
			err = create(ctx, doc, cs.RbacV1().ClusterRoles().Create)
		case "ClusterRoleBinding":
			err = create(ctx, doc, cs.RbacV1().ClusterRoleBindings().Create)
		case "Role":
			err = createNamespaced(ctx, doc, func(ns string) createFunc[*rbacv1.Role] { return cs.RbacV1().Roles(ns).Create })
		case "RoleBinding":
			err = createNamespaced(ctx, doc, func(ns string) createFunc[*rbacv1.RoleBinding] { return cs.RbacV1().RoleBindings(ns).Create })
		default:
			err = fmt.Errorf("kind %s is not supported by the lab", tm.Kind)
		}
		if err != nil {
			return fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
	}
	return nil
}

type createFunc[T any] func(context.Context, T, metav1.CreateOptions) (T, error)

// object is what create needs from a typed API object: a pointer that YAML can
// fill and that has ObjectMeta.
type object[T any] interface {
	*T
	GetNamespace() string
}

func create[T any, PT object[T]](ctx context.Context, doc string, fn createFunc[PT]) error {
	obj := PT(new(T))
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return err
	}
	// Right after a Namespace is created the admission cache may not know it
	// yet; retry NotFound briefly instead of failing the lab.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := fn(ctx, obj, metav1.CreateOptions{})
		switch {
		case err == nil, apierrors.IsAlreadyExists(err):
			return nil
		case apierrors.IsNotFound(err) && time.Now().Before(deadline):
			time.Sleep(200 * time.Millisecond)
		default:
			return err
		}
	}
}

func createNamespaced[T any, PT object[T]](ctx context.Context, doc string, forNS func(string) createFunc[PT]) error {
	obj := PT(new(T))
	if err := yaml.Unmarshal([]byte(doc), obj); err != nil {
		return err
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return create(ctx, doc, forNS(ns))
}

// writeOutpostKubeconfig asks the TokenRequest API for a token of the
// kube-outpost ServiceAccount (no token Secret: there is no controller-manager,
// and real clusters stopped creating them too) and writes the kubeconfig.
func (c *Cluster) writeOutpostKubeconfig(ctx context.Context) error {
	ttl := int64(outpostTokenTTL / time.Second)
	tr, err := c.Admin.CoreV1().ServiceAccounts(outpostNamespace).CreateToken(ctx, outpostServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}},
		metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s/%s: %w", outpostNamespace, outpostServiceAccount, err)
	}
	return writeKubeconfig(c.Kubeconfig, c.Name, outpostServiceAccount+"@"+c.Name, c.url(), c.caPEM, tr.Status.Token)
}

// ServiceAccountKubeconfig creates ServiceAccount namespace/name (and the
// namespace), binds it to clusterRole cluster-wide, and writes a kubeconfig
// with a token of it (TokenRequest, as writeOutpostKubeconfig) in the
// cluster's directory. It returns the kubeconfig's path. For a second
// client with rights of its own, e.g. kube-proxy with the bootstrap role
// "system:node-proxier".
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name, clusterRole string) (string, error) {
	cs := c.Admin
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: namespace + ":" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	ttl := int64(outpostTokenTTL / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	path := filepath.Join(c.dir, namespace+"-"+name+".kubeconfig")
	return path, writeKubeconfig(path, c.Name, name+"@"+c.Name, c.url(), c.caPEM, tr.Status.Token)
}

// writeKubeconfig writes a single-context kubeconfig. The context and cluster
// are named after the lab cluster; the user name also carries the cluster so
// that several lab kubeconfigs can be merged without clashes.
//
// The token goes to a file of its own beside it (tokenFile, 0600), as
// check-config advises: a token inline is copied with every copy of the
// kubeconfig.
func writeKubeconfig(path, cluster, user, server string, caPEM []byte, token string) error {
	tokenFile := path + ".token"
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{TokenFile: tokenFile}
	cfg.Contexts[cluster] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: user}
	cfg.CurrentContext = cluster
	return clientcmd.WriteToFile(*cfg, path)
}

// restConfig is a client config that dials from the lab's host namespace. The
// proxy is disabled explicitly: client-go honours HTTPS_PROXY by default, and a
// proxy could not reach lab addresses anyway.
func (l *Lab) restConfig(server string, caPEM []byte, token string) *rest.Config {
	cfg := &rest.Config{
		Host:            server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
	}
	l.prepareRestConfig(cfg)
	return cfg
}

func (l *Lab) prepareRestConfig(cfg *rest.Config) {
	cfg.Dial = l.dialClient
	cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	// Tests create many objects quickly; client-go's default of 5 QPS would
	// make them slow for no benefit in a private lab.
	cfg.QPS = 1000
	cfg.Burst = 2000
}

// ClientFromKubeconfig builds a clientset from a kubeconfig (e.g.
// Cluster.Kubeconfig) that dials from the lab's host namespace, i.e. sees the
// apiserver exactly as kube-outpost running there does.
func (l *Lab) ClientFromKubeconfig(path string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	l.prepareRestConfig(cfg)
	return kubernetes.NewForConfig(cfg)
}

// repoRoot walks up from this source file (or, if the binary was built with
// -trimpath, from the working directory) to the directory holding go.mod.
func repoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				strings.Contains(string(b), "module github.com/kube-outpost/kube-outpost\n") {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("cannot find the kube-outpost repository root (go.mod)")
}

func newCA(cn string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func newServingCert(ca *x509.Certificate, caKey crypto.Signer, cn string, ips []net.IP, dns []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// InlineKubeconfig is the kubeconfig at path with its token file read into
// it: what a copy for another machine (the VM guest) needs, since the
// token file's path means nothing there.
func InlineKubeconfig(path string) ([]byte, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, err
	}
	for _, a := range cfg.AuthInfos {
		if a.TokenFile == "" {
			continue
		}
		tok, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return nil, err
		}
		a.Token, a.TokenFile = strings.TrimSpace(string(tok)), ""
	}
	return clientcmd.Write(*cfg)
}

// writeKubeconfigFrom writes an inline kubeconfig (InlineKubeconfig's) at
// path the way writeKubeconfig does, its token in a file beside it.
func writeKubeconfigFrom(path string, inline []byte) error {
	cfg, err := clientcmd.Load(inline)
	if err != nil {
		return err
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return fmt.Errorf("kubeconfig for %s: no complete current context", path)
	}
	cl := cfg.Clusters[ctx.Cluster]
	return writeKubeconfig(path, ctx.Cluster, ctx.AuthInfo, cl.Server, cl.CertificateAuthorityData, cfg.AuthInfos[ctx.AuthInfo].Token)
}
