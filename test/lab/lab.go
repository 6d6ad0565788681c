//go:build linux

// Package lab builds a throw-away network of Linux network namespaces with real
// kube-apiservers, so that kube-outpost can be tested against real clusters and
// real packets without touching the machine it runs on.
//
// Topology (all inside namespaces named "<ID>-..."; none has a default route or
// any link to the machine's own namespace):
//
//	<ID>-router   bridges infra 10.250.0.1/24 and pods 10.244.0.1/16, ip_forward=1;
//	              every bridge has a fixed MAC address (bridgeMAC)
//	<ID>-host     10.250.0.2/24, the "outside host" where kube-outpost runs;
//	              routes 10.244.0.0/16 and every ServiceCIDR via 10.250.0.1
//	<ID>-api-<c>  10.250.0.(10+i)/24: etcd on 127.0.0.1 and kube-apiserver :6443
//	<ID>-pod-<p>  10.244.1.N/16, route to 10.250.0.0/24 via 10.244.0.1;
//	              HTTP and UDP responders served by the test process itself
//	<ID>-client-<n> (AddRoutedClient) 10.251.N.2/30, veth to the host (10.251.N.1),
//	              routes the ServiceCIDRs and 10.244.0.0/16 via the host: a legacy
//	              machine that uses the host as its router; nothing routes back to it
//	<ID>-node-<n> (AddNode) 10.250.0.(220+k)/24 on the infra bridge, with its own
//	              pods (Node.AddPod) on 10.245.k.0/24 behind it, which nothing
//	              else routes: reached by a route via the node or its NodePorts
//	<ID>-node-<n> (AddLoopbackNode) nothing but its loopback, holding
//	              10.252.x.y/32: reaches an apiserver only through a relay
//	              in it (Cluster.RelayIn), which dials from <ID>-host
//	<ID>-off-<n>  (AddOffHost) 10.250.0.(210+k)/24 on the infra bridge, serving
//	              addresses the router routes to it (a cloud's metadata service):
//	              the host reaches them only by a default route via the router,
//	              which AddHostDefaultRoute adds; until then no namespace has one
//
// When any cluster has a ServiceCIDRv6, every namespace also gets IPv6 next to
// IPv4 (unique local addresses, added with nodad in namespaces with accept_dad=0,
// so that they are usable at once; still no default route anywhere):
//
//	<ID>-router   infra fd00:250::1/64, pods fd00:244::1/64, IPv6 forwarding on
//	<ID>-host     fd00:250::2/64; routes fd00:244::/64 and every ServiceCIDRv6 via
//	              fd00:250::1
//	<ID>-api-<c>  fd00:250::a+i/64 (the apiserver itself listens on IPv4 only)
//	<ID>-pod-<p>  fd00:244::X:Y/64 for 10.244.X.Y, route to fd00:250::/64 via
//	              fd00:244::1; the HTTP and UDP responders listen on both families
//	<ID>-client-<n> fd00:251:0:N::2/64, the host side fd00:251:0:N::1, routes
//	              fd00:244::/64 and the ServiceCIDRv6s via the host (IPv6
//	              forwarding on in the host namespace)
//
// and each kube-apiserver runs dual-stack (--service-cluster-ip-range=<v4>,<v6>).
//
// The machine needs root, iproute2, and the binaries test/lab/build-k8s.sh builds.
package lab

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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Fixed lab addressing. Cluster service ranges come from Options.
var (
	infraNet    = netip.MustParsePrefix("10.250.0.0/24")
	podNet      = netip.MustParsePrefix("10.244.0.0/16")
	routerInfra = netip.MustParseAddr("10.250.0.1")
	routerPods  = netip.MustParseAddr("10.244.0.1")
	hostIP      = netip.MustParseAddr("10.250.0.2")

	// The IPv6 counterparts, used when a cluster has a ServiceCIDRv6.
	infraNet6    = netip.MustParsePrefix("fd00:250::/64")
	podNet6      = netip.MustParsePrefix("fd00:244::/64")
	routerInfra6 = netip.MustParseAddr("fd00:250::1")
	routerPods6  = netip.MustParseAddr("fd00:244::1")
	hostIP6      = netip.MustParseAddr("fd00:250::2")
)

// ClusterOptions describes one cluster of the lab.
type ClusterOptions struct {
	Name        string       // e.g. "alpha"; [a-z0-9-], used in namespace and kubeconfig names
	ServiceCIDR netip.Prefix // --service-cluster-ip-range, e.g. 10.96.0.0/16
	// ServiceCIDRv6, when set (e.g. fd00:96::/108), makes the cluster
	// dual-stack: --service-cluster-ip-range=<ServiceCIDR>,<ServiceCIDRv6>.
	// Any cluster with one gives the whole lab IPv6 addressing. The zero
	// value means IPv4 only.
	ServiceCIDRv6 netip.Prefix
}

// Options configures Start.
type Options struct {
	Clusters []ClusterOptions
	// Log receives short progress lines; process output goes to files in Dir.
	// nil discards.
	Log io.Writer
	// Remote, when set, makes a remote lab: Clusters must be empty, the
	// clusters and pods are those of the lab that wrote the spec (see
	// remote.go). Only for a throw-away machine.
	Remote *RemoteSpec
	// BPF, when set, gives the host namespace and each node's (AddNode)
	// what a host of ebpf mode has and `ip netns exec`, which mounts a
	// fresh /sys, takes away: a bpffs at /sys/fs/bpf and the cgroup v2
	// hierarchy (see BPFHost).
	BPF *BPFHost
}

// BPFHost is what Options.BPF gives every command run in the host
// namespace (HostCommand, HostRun, StartOutpost) or in a node's
// (Node.Command, Node.StartOutpost, Node.StartDaemon), in its own mount
// namespace, before it execs:
//
//   - at /sys/fs/bpf, a bind mount of one bpffs of the host's own,
//     mounted on Lab.BPFFS in the test's mount namespace at Start, or of
//     the node's own, mounted on Node.BPFFS at AddNode; Close unmounts
//     them. The pins outlive each process, so a restarted daemon adopts
//     those of the last one, as on a real host, and the test reads them
//     at Lab.BPFFS (Node.BPFFS). Each node is a machine of its own: no
//     two share pins. The machine's own /sys/fs/bpf is never touched.
//   - at Cgroup2, the cgroup v2 hierarchy, as the machine mounts it there,
//     so that a cgroup's path is the same inside as outside.
type BPFHost struct {
	// Cgroup2 is where the machine mounts the cgroup v2 hierarchy:
	// /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host.
	Cgroup2 string
}

// Lab is a running lab; Close it (also when the test fails).
type Lab struct {
	ID       string // prefix of every namespace name: "ko<pid>", "ko<pid>x<n>" for further labs of a process
	Dir      string // certificates, kubeconfigs, logs; kept after Close if KO_LAB_KEEP=1
	HostNS   string // namespace of the outside host, where kube-outpost runs
	HostIP   netip.Addr
	HostIPv6 netip.Addr // fd00:250::2 when some cluster has a ServiceCIDRv6, else zero
	Clusters []*Cluster

	log      io.Writer
	logMu    sync.Mutex
	binDir   string
	routerNS string
	ipv6     bool   // some cluster has a ServiceCIDRv6: IPv6 addressing everywhere
	remote   string // control URL of the serving lab; "" for a local lab
	// bpf is Options.BPF, its Cgroup2 cleaned; nil without.
	bpf *BPFHost
	// hostMounts is the shell script that makes Options.BPF's mounts
	// in the host namespace and execs its arguments; "" without
	// Options.BPF. A node's is Node.mounts.
	hostMounts string

	// BPFFS is the directory of the host's bpffs (Options.BPF) in the
	// test's mount namespace; "" without.
	BPFFS string

	mu        sync.Mutex // guards the fields below
	closed    bool
	pods      map[string]*podState
	podSeq    int                   // pod addresses are never reused, so stale conntrack entries cannot hit a new pod
	clients   map[net.Conn]struct{} // connections of the lab's Kubernetes clients, closed by Close
	routed    map[string]*Client    // routed clients by name; nil value: AddRoutedClient still running
	nodes     map[string]*Node      // by name
	routSeq   int                   // subnets of routed clients are never reused either
	offHosts  int                   // off-host machines added (AddOffHost)
	loopNodes int                   // loopback-only nodes added (AddLoopbackNode)
	servers   []io.Closer           // servers outside pods (off-host machines, the gateway), closed by Close

	closeOnce sync.Once
	closeErr  error
}

var labSeq atomic.Int32

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$`)

// Start builds the lab: namespaces and links, then for every cluster (in
// parallel) etcd, kube-apiserver, the RBAC of packaging/rbac.yaml and a
// kube-outpost kubeconfig. If anything fails, everything created so far is
// removed again.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	if opts.Remote != nil && len(opts.Clusters) > 0 {
		return nil, errors.New("lab: a remote lab takes its clusters from the spec")
	}
	id := fmt.Sprintf("ko%d", os.Getpid())
	if n := labSeq.Add(1); n > 1 {
		id += fmt.Sprintf("x%d", n)
	}
	l := &Lab{
		ID:       id,
		HostNS:   id + "-host",
		HostIP:   hostIP,
		log:      opts.Log,
		routerNS: id + "-router",
		pods:     map[string]*podState{},
		clients:  map[net.Conn]struct{}{},
		routed:   map[string]*Client{},
	}
	for _, c := range opts.Clusters {
		if c.ServiceCIDRv6.IsValid() {
			l.ipv6 = true
			l.HostIPv6 = hostIP6
		}
	}
	begin := time.Now()
	// Close copes with a partly built lab, so it is the one error path.
	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("teardown: %w", cerr))
			}
		}
	}()
	cleanupStaleLabs(l.logf)

	if opts.Remote == nil {
		if l.binDir, err = findBinaries(ctx, l.log); err != nil {
			return nil, err
		}
	}
	if l.Dir, err = os.MkdirTemp("", id+"-"); err != nil {
		return nil, err
	}
	// The marker lets a later Start recognise this directory as a lab's when
	// this process dies without Close (see cleanupStaleLabs).
	if err := os.WriteFile(filepath.Join(l.Dir, dirMarker), nil, 0o644); err != nil {
		return nil, err
	}
	if opts.BPF != nil {
		if err := l.mountBPF(*opts.BPF); err != nil {
			return nil, err
		}
	}
	if opts.Remote != nil {
		if err := l.startRemote(ctx, opts.Remote); err != nil {
			return nil, fmt.Errorf("remote lab: %w", err)
		}
		l.logf("ready in %s", time.Since(begin).Round(100*time.Millisecond))
		return l, nil
	}

	for i, co := range opts.Clusters {
		l.Clusters = append(l.Clusters, &Cluster{
			Name:            co.Name,
			ServiceCIDR:     co.ServiceCIDR,
			ServiceCIDRv6:   co.ServiceCIDRv6,
			APIServerIP:     netip.AddrFrom4([4]byte{10, 250, 0, byte(10 + i)}),
			Kubeconfig:      filepath.Join(l.Dir, co.Name, "kubeconfig"),
			AdminKubeconfig: filepath.Join(l.Dir, co.Name, "admin.kubeconfig"),
			CAFile:          filepath.Join(l.Dir, co.Name, "ca.crt"),
			lab:             l,
			ns:              id + "-api-" + co.Name,
			dir:             filepath.Join(l.Dir, co.Name),
		})
	}
	l.logf("creating namespaces (dir %s)", l.Dir)
	if err := l.setupNetwork(); err != nil {
		return nil, fmt.Errorf("lab network: %w", err)
	}

	// The apiservers start in parallel: each spends 10-20 s mostly waiting.
	// The first failure cancels the others.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(l.Clusters))
	var wg sync.WaitGroup
	for i, c := range l.Clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.setup(sctx); err != nil {
				errs[i] = fmt.Errorf("cluster %s: %w", c.Name, err)
				cancel()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	l.logf("ready in %s", time.Since(begin).Round(100*time.Millisecond))
	return l, nil
}

// KernelHasIPv6 reports whether this kernel has IPv6 (it does not when booted
// with ipv6.disable=1), i.e. whether a lab with a ServiceCIDRv6 can start.
func KernelHasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

func validate(opts Options) error {
	seen := map[string]bool{}
	ipv6 := false
	if len(opts.Clusters) > 200 {
		return errors.New("lab: at most 200 clusters")
	}
	for _, c := range opts.Clusters {
		if !nameRE.MatchString(c.Name) {
			return fmt.Errorf("lab: cluster name %q: want [a-z0-9-], at most 40 characters", c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("lab: duplicate cluster name %q", c.Name)
		}
		seen[c.Name] = true
		p := c.ServiceCIDR
		if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 {
			return fmt.Errorf("lab: cluster %s: ServiceCIDR %v must be an IPv4 prefix of at most /30", c.Name, p)
		}
		if p.Overlaps(infraNet) || p.Overlaps(podNet) {
			return fmt.Errorf("lab: cluster %s: ServiceCIDR %v overlaps the lab networks %v and %v", c.Name, p, infraNet, podNet)
		}
		if p6 := c.ServiceCIDRv6; p6 != (netip.Prefix{}) {
			ipv6 = true
			if !p6.IsValid() || !p6.Addr().Is6() || p6.Addr().Is4In6() || p6.Bits() < 64 || p6.Bits() > 126 {
				return fmt.Errorf("lab: cluster %s: ServiceCIDRv6 %v must be an IPv6 prefix between /64 and /126", c.Name, p6)
			}
			if p6.Overlaps(infraNet6) || p6.Overlaps(podNet6) || p6.Overlaps(clientNet6) {
				return fmt.Errorf("lab: cluster %s: ServiceCIDRv6 %v overlaps the lab networks %v, %v and %v", c.Name, p6, infraNet6, podNet6, clientNet6)
			}
		}
	}
	if ipv6 && !KernelHasIPv6() {
		return errors.New("lab: a ServiceCIDRv6 is set, but this kernel has no IPv6 (booted with ipv6.disable=1?)")
	}
	return nil
}

// setupNetwork creates the router, host and apiserver namespaces and links.
func (l *Lab) setupNetwork() error {
	r := l.routerNS
	steps := [][]string{
		{"netns", r},
		{"-n", r, "link", "add", "infra", "address", bridgeMAC(routerInfra), "type", "bridge"},
		{"-n", r, "addr", "add", routerInfra.String() + "/24", "dev", "infra"},
		{"-n", r, "link", "set", "infra", "up"},
		{"-n", r, "link", "add", "pods", "address", bridgeMAC(routerPods), "type", "bridge"},
		{"-n", r, "addr", "add", routerPods.String() + "/16", "dev", "pods"},
		{"-n", r, "link", "set", "pods", "up"},
		{"sysctl", r, "net/ipv4/ip_forward", "1"},

		{"netns", l.HostNS},
		{"veth", r, "infra", "vhost", l.HostNS},
		{"-n", l.HostNS, "addr", "add", l.HostIP.String() + "/24", "dev", "eth0"},
		{"-n", l.HostNS, "route", "add", podNet.String(), "via", routerInfra.String()},
	}
	// Without a route to the ClusterIP the host's connect() fails with
	// ENETUNREACH before the OUTPUT chain (where kube-outpost DNATs) is reached.
	// replace, not add: two clusters may share a range.
	for _, c := range l.Clusters {
		steps = append(steps, []string{"-n", l.HostNS, "route", "replace", c.ServiceCIDR.Masked().String(), "via", routerInfra.String()})
	}
	for i, c := range l.Clusters {
		steps = append(steps,
			[]string{"netns", c.ns},
			[]string{"veth", r, "infra", fmt.Sprintf("vapi%d", i), c.ns},
			[]string{"-n", c.ns, "addr", "add", c.APIServerIP.String() + "/24", "dev", "eth0"},
			[]string{"-n", c.ns, "route", "add", podNet.String(), "via", routerInfra.String()},
		)
	}
	if l.ipv6 {
		steps = append(steps, l.ipv6Steps()...)
	}
	for _, s := range steps {
		var err error
		switch s[0] {
		case "netns":
			err = l.addNetns(s[1])
		case "veth":
			err = vethInto(s[1], s[2], s[3], s[4])
		case "sysctl":
			err = writeSysctlIn(s[1], s[2], s[3])
		default:
			err = ipCmd(s...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ipv6Steps are the setupNetwork steps that add IPv6 next to IPv4, once the
// namespaces and links exist.
func (l *Lab) ipv6Steps() [][]string {
	r := l.routerNS
	steps := [][]string{
		// Without a multicast querier a snooping bridge may drop the
		// neighbour solicitations between router and pods; a lab bridge
		// has no use for snooping.
		{"-n", r, "link", "set", "infra", "type", "bridge", "mcast_snooping", "0"},
		{"-n", r, "link", "set", "pods", "type", "bridge", "mcast_snooping", "0"},
		{"-n", r, "addr", "add", routerInfra6.String() + "/64", "dev", "infra", "nodad"},
		{"-n", r, "addr", "add", routerPods6.String() + "/64", "dev", "pods", "nodad"},
		{"sysctl", r, "net/ipv6/conf/all/forwarding", "1"},
		{"-n", l.HostNS, "addr", "add", l.HostIPv6.String() + "/64", "dev", "eth0", "nodad"},
		{"-n", l.HostNS, "route", "add", podNet6.String(), "via", routerInfra6.String()},
	}
	for _, c := range l.Clusters {
		if c.ServiceCIDRv6.IsValid() {
			steps = append(steps, []string{"-n", l.HostNS, "route", "replace", c.ServiceCIDRv6.Masked().String(), "via", routerInfra6.String()})
		}
	}
	for i, c := range l.Clusters {
		a := infraNet6.Addr().As16()
		a[15] = byte(10 + i)
		steps = append(steps,
			[]string{"-n", c.ns, "addr", "add", netip.AddrFrom16(a).String() + "/64", "dev", "eth0", "nodad"},
			[]string{"-n", c.ns, "route", "add", podNet6.String(), "via", routerInfra6.String()},
		)
	}
	return steps
}

// addNetns creates a namespace; in an IPv6 lab with duplicate address
// detection off, so that no address of the lab (link-local ones included)
// is ever tentative: a test must not race DAD.
func (l *Lab) addNetns(name string) error {
	if err := addNetns(name); err != nil {
		return err
	}
	if !l.ipv6 {
		return nil
	}
	for _, key := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
		if err := writeSysctlIn(name, key, "0"); err != nil {
			return fmt.Errorf("%s in %s: %w", key, name, err)
		}
	}
	return nil
}

// Cluster returns the cluster with the given name, or nil.
func (l *Lab) Cluster(name string) *Cluster {
	for _, c := range l.Clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Close stops the pods' servers and all processes, deletes every namespace of
// the lab (killing whatever still runs in them, e.g. a kube-outpost a test
// started with HostCommand) and removes Dir unless KO_LAB_KEEP=1. It is
// idempotent and safe after a failed Start.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *Lab) close() error {
	l.mu.Lock()
	l.closed = true
	pods := l.pods
	l.pods = nil
	clients := l.clients
	l.clients = nil
	servers := l.servers
	l.servers = nil
	l.mu.Unlock()

	for _, s := range servers {
		s.Close()
	}

	for _, p := range pods {
		if p != nil { // nil: AddPod still running; it notices closed and cleans up
			p.stop()
		}
	}
	for c := range clients {
		c.Close()
	}
	for _, c := range l.Clusters {
		c.kill()
	}
	var errs []error
	if l.remote != "" {
		errs = append(errs, l.closeRemote())
	}
	// Sweep by prefix rather than by a list of what was created, so that a
	// namespace whose setup failed half-way is removed too.
	names, err := listNetns()
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range names {
		if strings.HasPrefix(ns, l.ID+"-") {
			if err := deleteNetns(ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Once nothing runs in the host namespace any more: its bpffs (and
	// with it every pin and hook of ebpf mode there) goes with the last
	// mount namespace that holds it.
	if l.bpf != nil && l.Dir != "" {
		if err := unmountBPFFSes(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Dir != "" {
		if os.Getenv("KO_LAB_KEEP") == "1" {
			l.logf("KO_LAB_KEEP=1: keeping %s", l.Dir)
			_ = os.WriteFile(filepath.Join(l.Dir, keptMarker), nil, 0o644)
		} else if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Lab) logf(format string, args ...any) {
	if l.log == nil {
		return
	}
	l.logMu.Lock()
	defer l.logMu.Unlock()
	fmt.Fprintf(l.log, "lab %s: %s\n", l.ID, fmt.Sprintf(format, args...))
}

// HostCommand returns `ip netns exec <HostNS> name args...`. The process is
// killed if the test process dies (Pdeathsig), and by Close at the latest.
func (l *Lab) HostCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return l.nsCommand(ctx, l.HostNS, name, args...)
}

// nsCommand returns `ip netns exec <ns> name args...`, killed if the test
// process dies. In the host namespace or a node's of a lab with
// Options.BPF, the program is execed by a shell that first makes the
// mounts of BPFHost.
func (l *Lab) nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	if script := l.mountsOf(ns); script != "" {
		// $0 names the shell in its errors; "$@" is the program.
		args = append([]string{"-c", script, "lab-host-mounts", name}, args...)
		name = "sh"
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// HostRun runs a command in HostNS and returns its combined output.
func (l *Lab) HostRun(ctx context.Context, name string, args ...string) (string, error) {
	out, err := l.HostCommand(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s (in %s): %w\n%s", name, strings.Join(args, " "), l.HostNS, err, out)
	}
	return string(out), nil
}

// DialHost dials from HostNS, so the packets traverse the host's OUTPUT chain
// and routes exactly like those of a process running there. Use IP literals:
// a name would be resolved by goroutines outside the namespace.
func (l *Lab) DialHost(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(ctx, l.HostNS, network, addr)
}

// dialClient is DialHost for the lab's Kubernetes clients; Close closes these
// connections, so no socket keeps a deleted namespace alive.
func (l *Lab) dialClient(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := l.DialHost(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, errors.New("lab is closed")
	}
	tc := &trackedConn{Conn: c, l: l}
	l.clients[tc] = struct{}{}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	l    *Lab
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.clients, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// HTTPGet fetches url from HostNS over a new connection (no keep-alive, so
// every call is a new conntrack entry and goes through load balancing again).
// It returns the body without surrounding whitespace; a non-2xx status is an
// error that carries the body.
func (l *Lab) HTTPGet(ctx context.Context, url string) (string, error) {
	body, _, err := httpGet(ctx, l.DialHost, url)
	return body, err
}

// HTTPGetHeader is HTTPGet that also returns the response header (the lab's
// pods send X-Pod and X-Remote-Addr).
func (l *Lab) HTTPGetHeader(ctx context.Context, url string) (string, http.Header, error) {
	return httpGet(ctx, l.DialHost, url)
}

// UDPRequest sends one datagram from HostNS and returns the first answer,
// trimmed. It waits 2 s for the answer, less if ctx ends sooner.
func (l *Lab) UDPRequest(ctx context.Context, addr string, payload string) (string, error) {
	return udpRequest(ctx, l.DialHost, addr, payload)
}

// dialFunc dials from one namespace.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// httpGet is HTTPGet over dial; the header is nil when no response came.
func httpGet(ctx context.Context, dial dialFunc, url string) (string, http.Header, error) {
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	body := strings.TrimSpace(string(b))
	if err != nil {
		return body, resp.Header, err
	}
	if resp.StatusCode/100 != 2 {
		return body, resp.Header, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, resp.Header, nil
}

// udpRequest is UDPRequest over dial.
func udpRequest(ctx context.Context, dial dialFunc, addr string, payload string) (string, error) {
	c, err := dial(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	// Unblock the read when ctx is cancelled (not only at its deadline).
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write([]byte(payload)); err != nil {
		return "", err
	}
	buf := make([]byte, 64*1024)
	n, err := c.Read(buf)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("udp %s: %w (%v)", addr, ctx.Err(), err)
		}
		return "", fmt.Errorf("udp %s: %w", addr, err)
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// findBinaries returns the directory holding kube-apiserver and etcd:
// $KO_LAB_BIN if set, otherwise what test/lab/build-k8s.sh prints (it builds
// once, then answers from its cache). A file lock serialises the script across
// test processes, so two packages' labs do not both run the first build.
func findBinaries(ctx context.Context, log io.Writer) (string, error) {
	if dir := os.Getenv("KO_LAB_BIN"); dir != "" {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "kube-outpost-lab-build.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "test", "lab", "build-k8s.sh"))
	cmd.Dir = root
	if log != nil {
		cmd.Stderr = log
	}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("test/lab/build-k8s.sh: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("build-k8s.sh printed %q: %w", dir, err)
		}
	}
	return dir, nil
}
