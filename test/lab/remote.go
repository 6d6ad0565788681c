//go:build linux

package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// A remote lab uses the clusters and pods of a lab running elsewhere: the
// IPVS suite runs the end-to-end tests inside a QEMU guest, whose kernel has
// ip_vs, against the apiservers and pods of the lab on the machine that
// boots it. The guest reaches them through QEMU's user networking, and the
// lab that runs them through a small control server (Serve) that adds pods
// and stops or starts an apiserver on request.
//
// On the remote side the topology is, in the guest:
//
//	(guest's own namespace)  uplink <ID>up 10.250.0.1/32, ip_forward=1,
//	                         masquerade of 10.250.0.2 out of the default route
//	<ID>-host                10.250.0.2/32, routes the infra and pod networks
//	                         and every ServiceCIDR via 10.250.0.1
//
// so the host namespace has the address and the routes of a local lab's, and
// AddRoutedClient, HostCommand and DialHost work the same. The pods see the
// requests coming from the address QEMU's sockets have in the serving lab,
// which is its host namespace's 10.250.0.2 as well.
//
// A remote lab changes the namespace it starts in (the uplink, ip_forward and
// one masquerade rule, removed again by Close): use it only on a throw-away
// machine such as that guest.

// RemoteSpec is what a remote lab needs to know of the serving lab; Serve
// writes it, Options.Remote reads it.
type RemoteSpec struct {
	// Control is the base URL of the serving lab's control server as the
	// remote machine reaches it (e.g. http://10.0.2.2:PORT from a QEMU guest).
	Control  string          `json:"control"`
	Clusters []RemoteCluster `json:"clusters"`
}

// RemoteCluster is one cluster of the serving lab.
type RemoteCluster struct {
	Name          string `json:"name"`
	ServiceCIDR   string `json:"serviceCIDR"`
	ServiceCIDRv6 string `json:"serviceCIDRv6,omitempty"`
	APIServerIP   string `json:"apiserverIP"`
	CAPEM         []byte `json:"caPEM"`
	AdminToken    string `json:"adminToken"`
	// Kubeconfig is the content of the cluster's kube-outpost kubeconfig.
	Kubeconfig []byte `json:"kubeconfig"`
}

// Serve runs the control server of this lab on ln until ctx ends, and
// returns the spec a remote lab needs, with control as the URL it reaches
// ln at. Requests: POST /pods?name=N&tcp=P,P&udp=P (AddPod, answers the
// Pod as JSON), POST /pods/N/remove, POST /clusters/C/apiserver/stop|start.
func (l *Lab) Serve(ctx context.Context, ln net.Listener, control string) (*RemoteSpec, error) {
	spec := &RemoteSpec{Control: control}
	for _, c := range l.Clusters {
		kc, err := InlineKubeconfig(c.Kubeconfig)
		if err != nil {
			return nil, err
		}
		rc := RemoteCluster{
			Name: c.Name, ServiceCIDR: c.ServiceCIDR.String(), APIServerIP: c.APIServerIP.String(),
			CAPEM: c.caPEM, AdminToken: c.adminToken, Kubeconfig: kc,
		}
		if c.ServiceCIDRv6.IsValid() {
			rc.ServiceCIDRv6 = c.ServiceCIDRv6.String()
		}
		spec.Clusters = append(spec.Clusters, rc)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /pods", func(w http.ResponseWriter, r *http.Request) {
		tcp, err1 := ports(r.URL.Query().Get("tcp"))
		udp, err2 := ports(r.URL.Query().Get("udp"))
		if err := errors.Join(err1, err2); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, err := l.AddPod(r.Context(), r.URL.Query().Get("name"), tcp, udp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("POST /pods/{name}/remove", func(w http.ResponseWriter, r *http.Request) {
		if err := l.RemovePod(r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("POST /clusters/{name}/apiserver/{action}", func(w http.ResponseWriter, r *http.Request) {
		c := l.Cluster(r.PathValue("name"))
		if c == nil {
			http.Error(w, "no such cluster", http.StatusNotFound)
			return
		}
		var err error
		switch r.PathValue("action") {
		case "stop":
			err = c.StopAPIServer()
		case "start":
			err = c.StartAPIServer(r.Context())
		default:
			http.Error(w, "want stop or start", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	context.AfterFunc(ctx, func() { srv.Close() })
	return spec, nil
}

// ListenHost opens a TCP listener in the lab's host namespace.
func (l *Lab) ListenHost(addr string) (net.Listener, error) {
	return listenIn(l.HostNS, "tcp", addr)
}

func ports(s string) ([]int, error) {
	var ps []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' }) {
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("port %q", f)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// ReadRemoteSpec reads a spec written as JSON.
func ReadRemoteSpec(path string) (*RemoteSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s RemoteSpec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.Control == "" || len(s.Clusters) == 0 {
		return nil, fmt.Errorf("%s: no control URL or no clusters", path)
	}
	return &s, nil
}

// startRemote builds the remote side: the host namespace with its uplink,
// and the clusters from the spec.
func (l *Lab) startRemote(ctx context.Context, spec *RemoteSpec) error {
	l.remote = spec.Control
	for i, rc := range spec.Clusters {
		c := &Cluster{
			Name:            rc.Name,
			Kubeconfig:      filepath.Join(l.Dir, rc.Name, "kubeconfig"),
			AdminKubeconfig: filepath.Join(l.Dir, rc.Name, "admin.kubeconfig"),
			CAFile:          filepath.Join(l.Dir, rc.Name, "ca.crt"),
			lab:             l,
			dir:             filepath.Join(l.Dir, rc.Name),
			adminToken:      rc.AdminToken,
			caPEM:           rc.CAPEM,
		}
		var err error
		if c.ServiceCIDR, err = netip.ParsePrefix(rc.ServiceCIDR); err != nil {
			return fmt.Errorf("cluster %d: %w", i, err)
		}
		if rc.ServiceCIDRv6 != "" {
			if c.ServiceCIDRv6, err = netip.ParsePrefix(rc.ServiceCIDRv6); err != nil {
				return fmt.Errorf("cluster %s: %w", rc.Name, err)
			}
			l.ipv6 = true
			l.HostIPv6 = hostIP6
		}
		if c.APIServerIP, err = netip.ParseAddr(rc.APIServerIP); err != nil {
			return fmt.Errorf("cluster %s: %w", rc.Name, err)
		}
		l.Clusters = append(l.Clusters, c)
	}
	if l.ipv6 {
		return errors.New("lab: a remote lab has no IPv6 (QEMU's user networking would have to carry it)")
	}
	if err := validate(Options{Clusters: clusterOptions(l.Clusters)}); err != nil {
		return err
	}
	for _, c := range l.Clusters {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(c.CAFile, c.caPEM, 0o644); err != nil {
			return err
		}
		if err := writeKubeconfigFrom(c.Kubeconfig, specKubeconfig(spec, c.Name)); err != nil {
			return err
		}
		if err := writeKubeconfig(c.AdminKubeconfig, c.Name, "admin@"+c.Name, c.url(), c.caPEM, c.adminToken); err != nil {
			return err
		}
		var err error
		if c.Admin, err = kubernetes.NewForConfig(l.restConfig(c.url(), c.caPEM, c.adminToken)); err != nil {
			return err
		}
	}

	up := l.ID + "up"
	steps := [][]string{
		{"netns", l.HostNS},
		{"link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", l.HostNS},
		{"addr", "add", routerInfra.String() + "/32", "dev", up},
		{"link", "set", up, "up"},
		{"route", "add", l.HostIP.String() + "/32", "dev", up},
		{"-n", l.HostNS, "addr", "add", l.HostIP.String() + "/32", "dev", "eth0"},
		{"-n", l.HostNS, "link", "set", "eth0", "up"},
		{"-n", l.HostNS, "route", "add", routerInfra.String() + "/32", "dev", "eth0"},
		{"-n", l.HostNS, "route", "add", infraNet.String(), "via", routerInfra.String()},
		{"-n", l.HostNS, "route", "add", podNet.String(), "via", routerInfra.String()},
	}
	for _, c := range l.Clusters {
		steps = append(steps, []string{"-n", l.HostNS, "route", "replace", c.ServiceCIDR.Masked().String(), "via", routerInfra.String()})
	}
	for _, s := range steps {
		var err error
		if s[0] == "netns" {
			err = l.addNetns(s[1])
		} else {
			err = ipCmd(s...)
		}
		if err != nil {
			return err
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}
	// QEMU's user networking answers only the guest's own address, so what
	// the host namespace sends leaves with it.
	if out, err := runCmd(ctx, "iptables", l.masqueradeRule("-A")...); err != nil {
		return fmt.Errorf("masquerade rule: %v: %s", err, out)
	}
	l.logf("remote lab: host namespace %s, clusters and pods of %s", l.HostNS, spec.Control)
	// Reachable the way kube-outpost reaches them, or fail now.
	for _, c := range l.Clusters {
		var err error
		for deadline := time.Now().Add(readyTimeout); ; {
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = c.Admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(actx)
			cancel()
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("cluster %s at %s: %w", c.Name, c.url(), err)
		}
	}
	return nil
}

func (l *Lab) masqueradeRule(op string) []string {
	return []string{"-t", "nat", op, "POSTROUTING", "-s", l.HostIP.String() + "/32", "!", "-o", l.ID + "up",
		"-m", "comment", "--comment", "kube-outpost remote lab " + l.ID, "-j", "MASQUERADE"}
}

func clusterOptions(cs []*Cluster) []ClusterOptions {
	var opts []ClusterOptions
	for _, c := range cs {
		opts = append(opts, ClusterOptions{Name: c.Name, ServiceCIDR: c.ServiceCIDR, ServiceCIDRv6: c.ServiceCIDRv6})
	}
	return opts
}

func specKubeconfig(spec *RemoteSpec, name string) []byte {
	for _, c := range spec.Clusters {
		if c.Name == name {
			return c.Kubeconfig
		}
	}
	return nil
}

// control sends one request to the serving lab's control server.
func (l *Lab) control(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.remote+path, nil)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	if err != nil {
		return nil, fmt.Errorf("serving lab %s: %w", path, err)
	}
	return body, nil
}

func (l *Lab) addRemotePod(ctx context.Context, name string, tcpPorts, udpPorts []int) (*Pod, error) {
	join := func(ps []int) string {
		var s []string
		for _, p := range ps {
			s = append(s, strconv.Itoa(p))
		}
		return strings.Join(s, ",")
	}
	body, err := l.control(ctx, fmt.Sprintf("/pods?name=%s&tcp=%s&udp=%s", name, join(tcpPorts), join(udpPorts)))
	if err != nil {
		return nil, err
	}
	var p Pod
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func runCmd(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// closeRemote undoes what startRemote did outside the lab's namespaces.
func (l *Lab) closeRemote() error {
	var errs []error
	if out, err := runCmd(context.Background(), "iptables", l.masqueradeRule("-D")...); err != nil && !strings.Contains(string(out), "does a matching rule exist") {
		errs = append(errs, fmt.Errorf("removing the masquerade rule: %v: %s", err, out))
	}
	// The uplink goes with the host namespace; this is for a half-built lab.
	_ = ipCmd("link", "del", l.ID+"up")
	return errors.Join(errs...)
}
