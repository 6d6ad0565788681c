//go:build bench

package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/config"
	koebpf "github.com/kube-outpost/kube-outpost/internal/proxy/ebpf"
	"github.com/kube-outpost/kube-outpost/internal/proxy/kernelbench"
	"github.com/kube-outpost/kube-outpost/test/lab"
	"github.com/kube-outpost/kube-outpost/test/plot"
)

var (
	flagServices    = flag.Int("services", 10000, "services in the cluster (the sample ones included)")
	flagEndpoints   = flag.Int("endpoints", 10, "endpoints per service")
	flagSample      = flag.Int("sample", 10, "services whose endpoints are pods with real listeners; the first-packet figure with only these is the \"small S\" one")
	flagChanges     = flag.Int("changes", 50, "changes measured per row under the churn")
	flagLone        = flag.Int("lone", 20, "lone changes measured per row, each after the proxy was idle for loneGap")
	flagChurn       = flag.Float64("churn", 50, "background EndpointSlice changes a second while the changes are measured")
	flagModes       = flag.String("modes", "", "comma-separated iptables, iptables-legacy, nftables, ebpf; empty: every one this machine has")
	flagProxies     = flag.String("proxies", "kube-proxy,kube-proxy-min-sync-0,kube-outpost", "comma-separated proxies to run per mode")
	flagColdTimeout = flag.Duration("cold-timeout", 5*time.Minute, "give a cold sync (and a restart) up after this")
	flagConnects    = flag.Int("connects", 1000, "connect(2) samples per first-packet figure")
	flagOut         = flag.String("out", "", "results directory; default results/<UTC time>-<S>x<E> beside this file")
	flagOutpostKeys = flag.String("outpost-keys", "", `top-level keys added to kube-outpost's config, one a line, e.g. 'log_level = "debug"' to see its syncs`)
)

const (
	namespace   = "bench"
	servicePort = 80
	podPort     = 8080
	// The endpoints of the services without listeners: never connected to,
	// outside every lab network. Churn writes fresh ones from churnNet.
	fakeNet  = "10.200.0.0/13"
	churnNet = "10.208.0.0/13"
)

// mode is a datapath a row runs in.
type mode struct {
	name      string // as in the table
	proxyMode string // kube-proxy's --proxy-mode, kube-outpost's mode
	legacy    bool   // iptables is iptables-legacy (PATH)
	// ebpf: kube-outpost's ebpf mode, which kube-proxy has not (no row
	// of its). Its hooks attach to the bench's throw-away cgroup, which
	// holds the bench process and so its probes (ebpfHost), and it pins
	// on its node's bpffs (lab.Options.BPF).
	ebpf bool
}

// modeNames are the modes in the order of the table.
var modeNames = []string{"iptables", "iptables-legacy", "nftables", "ebpf"}

var allModes = map[string]mode{
	"iptables":        {name: "iptables (nf_tables)", proxyMode: "iptables"},
	"iptables-legacy": {name: "iptables (legacy)", proxyMode: "iptables", legacy: true},
	"nftables":        {name: "nftables", proxyMode: "nftables"},
	"ebpf":            {name: "ebpf", proxyMode: "ebpf", ebpf: true},
}

// service is one Service of the load with its EndpointSlice as last written.
type service struct {
	name  string
	ip    netip.Addr
	slice *discoveryv1.EndpointSlice
	set   byte // sample services: 'a' or 'b', the pods it points at now
}

type bench struct {
	t        *testing.T
	l        *lab.Lab
	c        *lab.Cluster
	cs       kubernetes.Interface
	outpost  string // kube-outpost binary
	kproxy   string // kube-proxy binary
	kpConfig string // kube-proxy's kubeconfig
	legacy   string // a directory whose iptables* are the legacy ones
	pods     map[byte][]netip.Addr
	sample   []*service
	bulk     []*service
	nodes    int
	churnSeq atomic.Uint32
	// nEndpoints is the endpoints per service of the load.
	nEndpoints int
	// cgroup is the throw-away cgroup of ebpf mode's rows (ebpfHost);
	// "" when no row is in ebpf mode.
	cgroup string
}

func TestCompare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	p := Params{Services: *flagServices, Endpoints: *flagEndpoints, Sample: *flagSample, Changes: *flagChanges,
		Lone: *flagLone, Churn: *flagChurn, ColdTimeout: *flagColdTimeout}
	if p.Sample < 1 || p.Sample > p.Services || p.Endpoints < 1 {
		t.Fatalf("want 1 <= -sample <= -services and -endpoints >= 1")
	}
	rep := &Report{Params: p, Start: time.Now()}
	ctx := context.Background()
	b := &bench{t: t, pods: map[byte][]netip.Addr{}, nEndpoints: p.Endpoints}

	modes := b.modes()
	rep.Machine = machine()
	bpf := b.ebpfHost(modes) // before the lab, whose processes go into its cgroup
	var err error
	b.l, err = lab.Start(ctx, lab.Options{BPF: bpf, Clusters: []lab.ClusterOptions{{Name: "bench", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")}}, Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.l.Close() })
	b.c = b.l.Clusters[0]
	b.cs = b.c.Admin
	if b.kpConfig, err = b.c.ServiceAccountKubeconfig(ctx, "kube-system", "kube-proxy", "system:node-proxier"); err != nil {
		t.Fatal(err)
	}
	b.binaries()
	b.addPods(ctx)
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.sample = b.create(ctx, "sample", p.Sample, 0)

	type spec struct {
		m     mode
		proxy string
	}
	var specs []spec
	for _, m := range modes {
		for _, px := range strings.Split(*flagProxies, ",") {
			switch px {
			case "kube-proxy", "kube-proxy-min-sync-0":
				if m.ebpf {
					continue // kube-proxy has no such mode
				}
			}
			switch px {
			case "kube-proxy":
				specs = append(specs, spec{m, kubeProxy})
			case "kube-proxy-min-sync-0":
				specs = append(specs, spec{m, kubeProxyMinSync0})
			case "kube-outpost":
				specs = append(specs, spec{m, kubeOutpost})
			default:
				t.Fatalf("-proxies: unknown %q", px)
			}
		}
	}

	// First packet with only the sample services programmed: each row's
	// proxy starts, syncs, is timed, and goes.
	small := map[spec]time.Duration{}
	for _, s := range specs {
		small[s] = b.firstPacketSmall(ctx, s.m, s.proxy)
	}

	b.bulk = b.create(ctx, "svc", p.Services-p.Sample, p.Sample)
	for _, s := range specs {
		r := b.runRow(ctx, p, s.m, s.proxy)
		r.ConnectSmall = small[s]
		rep.Rows = append(rep.Rows, r)
		fmt.Fprintf(os.Stderr, ">> %s, %s: cold %s, change p50 %s p99 %s, lone change p50 %s p99 %s, CPU/change %.3f s, RSS %.0f MiB (peak %.0f), restart %s (%d/%d failed)%s\n",
			r.Mode, r.Proxy, fmtDur(r.Cold), fmtDur(quantile(r.Latencies, .5)), fmtDur(quantile(r.Latencies, .99)),
			fmtDur(quantile(r.Lone, .5)), fmtDur(quantile(r.Lone, .99)), r.CPUPerChange, r.RSSChurn, r.PeakChurn, fmtDur(r.Restart), r.RestartFailed, r.RestartProbes, errSuffix(r.Err))
	}
	rep.Took = time.Since(rep.Start)
	rep.Machine = append(rep.Machine, "load average at the end: "+loadavg())
	out := *flagOut
	if out == "" {
		out = filepath.Join("results", fmt.Sprintf("%s-%dx%d", rep.Start.UTC().Format("20060102-1504"), p.Services, p.Endpoints))
	}
	if err := rep.Write(out); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "\n%s\nreport: %s\n", rep.Table(), filepath.Join(out, "results.md"))
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return "; " + e
}

// modes are the -modes this machine has.
func (b *bench) modes() []mode {
	names := modeNames
	if *flagModes != "" {
		names = strings.Split(*flagModes, ",")
	}
	var out []mode
	for _, n := range names {
		m, ok := allModes[n]
		if !ok {
			b.t.Fatalf("-modes: unknown %q", n)
		}
		if m.ebpf {
			if _, err := koebpf.Cgroup2Mount(); err != nil {
				b.t.Logf("mode %s: %v, skipped", n, err)
				continue
			}
			out = append(out, m)
			continue
		}
		bin := map[string]string{"iptables": "iptables", "iptables-legacy": "iptables-legacy", "nftables": "nft"}[n]
		if _, err := exec.LookPath(bin); err != nil {
			b.t.Logf("mode %s: no %s here, skipped", n, bin)
			continue
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		b.t.Fatal("no mode to run")
	}
	return out
}

// ebpfHost is what a lab needs for ebpf mode's rows when modes has one,
// nil otherwise: it moves this process into a throw-away cgroup,
// kube-outpost-test-bench-<pid> (lab.EnterCgroup), which those rows'
// daemons attach to (ebpf_cgroup, never the machine's cgroup root). The
// probes of a row (answers, connectP50, the restart's) run on this
// process's threads in the row's node namespace, so its hooks translate
// them as they would a process's of a real host; the pods' servers,
// threads of this process too, are in namespaces of their own, which
// the hooks leave alone. The cgroup goes at the end, after the lab:
// called before lab.Start, its cleanup runs after the lab's Close.
func (b *bench) ebpfHost(modes []mode) *lab.BPFHost {
	if !slices.ContainsFunc(modes, func(m mode) bool { return m.ebpf }) {
		return nil
	}
	cg, err := lab.EnterCgroup("bench", os.Stderr)
	if err != nil {
		b.t.Fatalf("ebpf mode's throw-away cgroup: %v", err)
	}
	b.t.Cleanup(func() {
		if err := cg.Close(); err != nil {
			b.t.Error(err)
		}
	})
	b.cgroup = cg.Path
	fmt.Fprintf(os.Stderr, ">> ebpf mode: the hooks attach to %s, which holds this process; each node pins on a bpffs of its own\n", cg.Path)
	return cg.BPFHost()
}

// modeKeys are the top-level keys of kube-outpost's config that mode m
// needs in the lab, one a line: ebpf mode's cgroup (its pins go to the
// default ebpf_pin_dir, on the node's bpffs).
func (b *bench) modeKeys(m mode) string {
	if !m.ebpf {
		return ""
	}
	if b.cgroup == "" {
		b.t.Fatal("ebpf mode without the bench's cgroup (ebpfHost)")
	}
	return fmt.Sprintf("ebpf_cgroup = %q\n", b.cgroup)
}

// binaries finds kube-proxy where test/lab/build-k8s.sh built it (the lab
// has just run it), builds kube-outpost unless KO_BENCH_BINARY names one,
// and makes the directory whose iptables are the legacy ones.
func (b *bench) binaries() {
	dir := os.Getenv("KO_LAB_BIN")
	if dir == "" {
		out, err := exec.Command("bash", "../lab/build-k8s.sh").Output()
		if err != nil {
			b.t.Fatalf("test/lab/build-k8s.sh: %v", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	b.kproxy = filepath.Join(dir, "kube-proxy")
	if b.outpost = os.Getenv("KO_BENCH_BINARY"); b.outpost == "" {
		var err error
		if b.outpost, err = lab.BuildOutpost(context.Background(), b.t.TempDir()); err != nil {
			b.t.Fatal(err)
		}
	}
	b.legacy = b.t.TempDir()
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		legacy := strings.Replace(n, "tables", "tables-legacy", 1)
		if p, err := exec.LookPath(legacy); err == nil {
			if err := os.Symlink(p, filepath.Join(b.legacy, n)); err != nil {
				b.t.Fatal(err)
			}
		}
	}
}

// addPods starts the sample's endpoints: two sets of pods, a0… and b0…,
// each answering HTTP on podPort with its name. A change moves a sample
// service from one set to the other.
func (b *bench) addPods(ctx context.Context) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 2*b.endpoints())
	for _, set := range []byte{'a', 'b'} {
		b.pods[set] = make([]netip.Addr, b.endpoints())
		for i := range b.endpoints() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := b.l.AddPod(ctx, fmt.Sprintf("%c%d", set, i), []int{podPort}, nil)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				b.pods[set][i] = p.IP
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.t.Fatal(err)
	}
}

func (b *bench) endpoints() int { return b.nEndpoints }

// sliceFor is the EndpointSlice of svc over addrs.
func sliceFor(svc string, addrs []netip.Addr) *discoveryv1.EndpointSlice {
	ready := true
	port, name, proto := int32(podPort), "http", corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return s
}

// nthAddr is the n-th address of prefix p (n >= 1).
func nthAddr(p string, n int) netip.Addr {
	a := netip.MustParsePrefix(p).Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// create makes n services prefix-00000… and their EndpointSlices with 32
// clients at once, printing its progress. The sample ones (prefix
// "sample") point at the pods of set a; the others at fake addresses.
func (b *bench) create(ctx context.Context, prefix string, n, offset int) []*service {
	out := make([]*service, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	stop := make(chan struct{})
	go every(time.Second, stop, func() { progress(prefix, int(done.Load()), n, start) })
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s, err := b.createOne(ctx, prefix, i, offset)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				out[i] = s
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	progress(prefix, int(done.Load()), n, start)
	fmt.Fprintln(os.Stderr)
	if firstErr != nil {
		b.t.Fatal(firstErr)
	}
	return out
}

func progress(what string, done, n int, start time.Time) {
	const width = 40
	k := width
	if n > 0 {
		k = done * width / n
	}
	fmt.Fprintf(os.Stderr, "\r>> creating %s services [%s%s] %d/%d, %s", what, strings.Repeat("#", k), strings.Repeat(".", width-k), done, n, time.Since(start).Round(time.Second))
}

func (b *bench) createOne(ctx context.Context, prefix string, i, offset int) (*service, error) {
	name := fmt.Sprintf("%s-%05d", prefix, i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: servicePort,
			TargetPort: intstr.FromInt32(podPort), Protocol: corev1.ProtocolTCP}}},
	}
	got, err := retry(ctx, func() (*corev1.Service, error) {
		return b.cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	})
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	s := &service{name: name, ip: netip.MustParseAddr(got.Spec.ClusterIP), set: 'a'}
	var addrs []netip.Addr
	if prefix == "sample" {
		addrs = b.pods['a']
	} else {
		for j := range b.endpoints() {
			addrs = append(addrs, nthAddr(fakeNet, (offset+i)*b.endpoints()+j+1))
		}
	}
	s.slice, err = retry(ctx, func() (*discoveryv1.EndpointSlice, error) {
		return b.cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, sliceFor(name, addrs), metav1.CreateOptions{})
	})
	if err != nil {
		return nil, fmt.Errorf("EndpointSlice of %s: %w", name, err)
	}
	return s, nil
}

// retry calls f until it succeeds, up to 5 times: an apiserver this busy
// (2 cores, a proxy syncing beside it) sometimes times a write out.
func retry[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var v T
	var err error
	for i := range 5 {
		if v, err = f(); err == nil || apierrors.IsAlreadyExists(err) || ctx.Err() != nil {
			return v, err
		}
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	return v, err
}

// proc is one running proxy.
type proc struct {
	*lab.Outpost
	node    *lab.Node
	m       mode
	started time.Time
	outpost string // the kube-outpost binary; "" for kube-proxy
}

// newNode adds a node namespace for one row (kube-proxy needs its Node
// object, with an InternalIP so that it does not wait for one), routed as
// the host is.
func (b *bench) newNode(ctx context.Context) *lab.Node {
	n := b.outpostNode(ctx)
	if err := n.Register(ctx, b.cs); err != nil {
		b.t.Fatal(err)
	}
	return n
}

func (b *bench) env(m mode) []string {
	if m.legacy {
		return []string{"PATH=" + b.legacy + ":" + os.Getenv("PATH")}
	}
	return nil
}

// start starts proxy in node n, in mode m.
func (b *bench) start(ctx context.Context, n *lab.Node, m mode, proxy string) (*proc, error) {
	started := time.Now()
	var o *lab.Outpost
	var err error
	if proxy == kubeOutpost {
		dir := filepath.Join(b.l.Dir, n.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		cfg := filepath.Join(dir, "config.toml")
		// Every setting but the paths (and profiling) at its default: the comparison is of
		// what a user gets.
		// profiling serves pprof beside /metrics and changes nothing else.
		text := fmt.Sprintf("mode = %q\nstatus_socket = %q\nstate_dir = %q\nprofiling = true\n%s%s\n\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n",
			m.proxyMode, filepath.Join(dir, "status.sock"), filepath.Join(dir, "state"), b.modeKeys(m), *flagOutpostKeys, b.c.Name, b.c.Kubeconfig, b.c.ServiceCIDR)
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			return nil, err
		}
		o, err = n.StartOutpost(ctx, b.env(m), b.outpost, cfg)
	} else {
		args := []string{"--kubeconfig=" + b.kpConfig, "--hostname-override=" + n.Name, "--proxy-mode=" + m.proxyMode,
			"--nodeport-addresses=primary", "--conntrack-max-per-core=0", "--v=1"}
		if proxy == kubeProxyMinSync0 {
			// kube-proxy reads --iptables-min-sync-period in nftables mode too
			// (cmd/kube-proxy/app/options.go): there is no nftables flag.
			args = append(args, "--iptables-min-sync-period=0")
		}
		o, err = n.StartDaemon("kube-proxy", b.env(m), b.kproxy, args...)
	}
	if err != nil {
		return nil, err
	}
	pr := &proc{Outpost: o, node: n, m: m, started: started}
	if proxy == kubeOutpost {
		pr.outpost = b.outpost
	}
	return pr, nil
}

// stop ends the proxy and everything it left running in the node (an
// iptables-restore kube-proxy started outlives it), then removes the
// rules, so that the kernel does not keep a finished row's state. ebpf
// mode's hooks and maps outlive its daemon by design (a restart adopts
// them): `kube-outpost cleanup` in the node detaches the hooks and
// removes the pins of the node's bpffs; Lab.Close would unmount it
// anyway, taking what is left with it.
func (p *proc) stop() {
	_ = p.Stop(30 * time.Second)
	p.node.KillAll()
	ctx := context.Background()
	if p.m.ebpf && p.outpost != "" {
		if out, err := p.node.Command(ctx, p.outpost, "cleanup").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, ">> kube-outpost cleanup in %s: %v\n%s", p.node.Name, err, out)
		}
		if _, err := koebpf.ReadPinned(pinDir(p.node)); !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, ">> ebpf maps still pinned in %s after kube-outpost cleanup: %v\n", pinDir(p.node), err)
		}
	}
	_ = p.node.Command(ctx, "nft", "flush", "ruleset").Run()
	for _, ipt := range []string{"iptables-legacy", "ip6tables-legacy"} {
		for _, table := range []string{"nat", "filter", "mangle", "raw"} {
			_ = p.node.Command(ctx, ipt, "-t", table, "-F").Run()
			_ = p.node.Command(ctx, ipt, "-t", table, "-X").Run()
		}
	}
}

// serviceIPRE matches the ClusterIPs of the benches' clusters: 10.96/16
// (bench-compare's) to 10.99/16 (bench-clusters').
var serviceIPRE = regexp.MustCompile(`10\.9[6-9]\.[0-9]{1,3}\.[0-9]{1,3}`)

// programmed counts the services whose ClusterIP is in the kernel's rules
// (ebpf mode: maps) of the proxy's mode.
func (b *bench) programmed(ctx context.Context, p *proc, want map[netip.Addr]bool) (int, error) {
	seen := map[netip.Addr]bool{}
	err := b.scanRules(ctx, p, func(line []byte) {
		for _, m := range serviceIPRE.FindAll(line, -1) {
			if a, err := netip.ParseAddr(string(m)); err == nil && want[a] {
				seen[a] = true
			}
		}
	})
	return len(seen), err
}

// scanRules calls f with each line of the kernel's rules of the proxy's
// mode (`nft list ruleset`, `iptables-save -t nat`), or for ebpf mode
// with a line per service address of its maps pinned on the node's
// bpffs (ebpfLines): the one place that reads each mode's state.
func (b *bench) scanRules(ctx context.Context, p *proc, f func(line []byte)) error {
	if p.m.ebpf {
		return ebpfLines(pinDir(p.node), f)
	}
	var cmd *exec.Cmd
	if p.m.proxyMode == "nftables" {
		cmd = p.node.Command(ctx, "nft", "list", "ruleset")
	} else {
		cmd = p.node.Command(ctx, "iptables-save", "-t", "nat")
		cmd.Env = append(os.Environ(), b.env(p.m)...)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		f(sc.Bytes())
	}
	return cmd.Wait()
}

// pinDir is where kube-outpost in node n pins ebpf mode's maps: the
// default ebpf_pin_dir, on the node's bpffs.
func pinDir(n *lab.Node) string {
	return filepath.Join(n.BPFFS, filepath.Base(config.DefaultEBPFPinDir))
}

// ebpfLines calls f with a line per service address in ebpf mode's maps
// pinned in dir (koebpf.ReadPinned), which a connect() to it is
// translated with, as scanRules' callers read rules:
//
//	TCP 10.96.0.10:80 -> 10.244.1.1:8080 10.244.1.2:8080
//
// A service with no endpoint (refused) has nothing after the arrow; a
// slot or backend missing is "?". Nothing pinned is no line.
func ebpfLines(dir string, f func(line []byte)) error {
	svcs, err := koebpf.ReadPinned(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var line []byte
	for _, s := range svcs {
		line = fmt.Appendf(line[:0], "%s %s ->", s.Protocol, s.Target)
		for _, be := range s.Backends {
			if be.Addr.IsValid() {
				line = fmt.Appendf(line, " %s", be.Addr)
			} else {
				line = append(line, " ?"...)
			}
		}
		f(line)
	}
	return nil
}

// probeTimeout bounds one probe of answers: short, since a SYN that a
// proxy's half-written rules drop is sent again only after 1 s, which
// would make the figures that coarse; a new connection is tried instead.
const probeTimeout = 250 * time.Millisecond

// answers reports whether svc answers from its current set of pods.
func (b *bench) answers(ctx context.Context, p *proc, svc *service) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, h, err := p.node.HTTPGetHeader(ctx, fmt.Sprintf("http://%s:%d/", svc.ip, servicePort))
	return err == nil && len(h.Get("X-Pod")) > 0 && h.Get("X-Pod")[0] == svc.set
}

// waitSynced waits until every service of svcs is in the kernel and
// sample[0] answers; it returns when that was first seen.
func (b *bench) waitSynced(ctx context.Context, p *proc, svcs []*service, timeout time.Duration) (time.Time, error) {
	want := map[netip.Addr]bool{}
	for _, s := range svcs {
		want[s.ip] = true
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if exited, err := p.Exited(); exited {
			return time.Time{}, fmt.Errorf("exited: %v\n%s", err, tail(p.Log()))
		}
		if b.answers(ctx, p, b.sample[0]) {
			at := time.Now()
			n, err := b.programmed(ctx, p, want)
			if err == nil && n == len(want) {
				return at, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Time{}, errTimeout
}

var errTimeout = errors.New("timed out")

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// connectP50 is the median of *flagConnects blocking connects from the
// node to the sample ClusterIPs, round robin, after 100 unkept ones.
func (b *bench) connectP50(p *proc) (time.Duration, error) {
	var ds []time.Duration
	err := lab.InNetns(p.node.NS, func() error {
		for i := range *flagConnects + 100 {
			d, err := kernelbench.Connect(netip.AddrPortFrom(b.sample[i%len(b.sample)].ip, servicePort))
			if err != nil {
				return err
			}
			if i >= 100 {
				ds = append(ds, d)
			}
		}
		return nil
	})
	return quantile(ds, 0.5), err
}

func (b *bench) firstPacketSmall(ctx context.Context, m mode, proxy string) time.Duration {
	n := b.newNode(ctx)
	p, err := b.start(ctx, n, m, proxy)
	if err != nil {
		b.t.Fatal(err)
	}
	defer p.stop()
	if _, err := b.waitSynced(ctx, p, b.sample, *flagColdTimeout); err != nil {
		b.t.Logf("%s, %s, sample services only: not synced: %v", m.name, proxy, err)
		return 0
	}
	d, err := b.connectP50(p)
	if err != nil {
		b.t.Logf("%s, %s: connect: %v", m.name, proxy, err)
		return 0
	}
	fmt.Fprintf(os.Stderr, ">> %s, %s: connect p50 with %d services: %s\n", m.name, proxy, len(b.sample)+1, fmtDur(d))
	return d
}

// cpuSeconds is the CPU time of pid and its waited-for children.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis; utime is the
	// 14th field of the line, the 12th after it.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	var ticks float64
	for _, i := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
		v, _ := strconv.ParseFloat(f[i], 64)
		ticks += v
	}
	return ticks / 100 // USER_HZ
}

// sampleRSS records the VmRSS of process *pid every half second, from
// start until stop closes; the pid changes at the restart.
func sampleRSS(pid *atomic.Int64, start time.Time, stop <-chan struct{}) []plot.Point {
	var out []plot.Point
	every(500*time.Millisecond, stop, func() {
		if v, err := kernelbench.ProcStatusMiB(strconv.FormatInt(pid.Load(), 10), "VmRSS"); err == nil {
			out = append(out, plot.Point{X: time.Since(start).Seconds(), Y: v})
		}
	})
	return out
}

// every calls f every d until stop closes.
func every(d time.Duration, stop <-chan struct{}, f func()) {
	tk := time.NewTicker(d)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			f()
		}
	}
}

func (p *proc) mem() (rss, peak float64) {
	pid := strconv.Itoa(p.Pid)
	rss, _ = kernelbench.ProcStatusMiB(pid, "VmRSS")
	peak, _ = kernelbench.ProcStatusMiB(pid, "VmHWM")
	return rss, peak
}

// flip moves a sample service to its other set of pods and returns when
// the write was sent.
func (b *bench) flip(ctx context.Context, s *service) (time.Time, error) {
	next := byte('a')
	if s.set == 'a' {
		next = 'b'
	}
	sl := s.slice.DeepCopy()
	sl.Endpoints = sliceFor(s.name, b.pods[next]).Endpoints
	at := time.Now()
	// As the EndpointSlice controller marks its writes: the proxies'
	// network programming latency starts there.
	if sl.Annotations == nil {
		sl.Annotations = map[string]string{}
	}
	sl.Annotations[corev1.EndpointsLastChangeTriggerTime] = at.Format(time.RFC3339Nano)
	got, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, sl, metav1.UpdateOptions{})
	if err != nil {
		return at, err
	}
	s.slice, s.set = got, next
	return at, nil
}

// churn changes random bulk services' endpoints at rate a second until
// stop closes, from 4 workers each owning a quarter of them; it returns
// the count of changes made.
func (b *bench) churn(ctx context.Context, rate float64, stop <-chan struct{}) func() int {
	var made atomic.Int64
	var wg sync.WaitGroup
	if rate <= 0 || len(b.bulk) == 0 {
		return func() int { return 0 }
	}
	workers := min(4, len(b.bulk))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(time.Duration(float64(time.Second)*float64(workers)/rate), stop, func() {
				k := rand.IntN((len(b.bulk)+workers-1-w)/workers)*workers + w
				s := b.bulk[k]
				sl := s.slice.DeepCopy()
				sl.Endpoints[0].Addresses = []string{nthAddr(churnNet, int(b.churnSeq.Add(1))).String()}
				got, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, sl, metav1.UpdateOptions{})
				if err == nil {
					s.slice = got
					made.Add(1)
				}
			})
		}()
	}
	return func() int { wg.Wait(); return int(made.Load()) }
}

// change moves sample service s to its other set of pods and returns the
// time from the write to the first connection a pod of the new set
// answered, probing every 5 ms; ok is false when none had after a
// minute (the time is then the minute).
func (b *bench) change(ctx context.Context, p *proc, s *service) (d time.Duration, ok bool, err error) {
	const changeTimeout = 60 * time.Second
	at, err := b.flip(ctx, s)
	if err != nil {
		return 0, false, err
	}
	for !b.answers(ctx, p, s) {
		if time.Since(at) > changeTimeout {
			return time.Since(at), false, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(at), true, nil
}

// runRow measures one proxy in one mode with the whole load.
func (b *bench) runRow(ctx context.Context, par Params, m mode, proxy string) (r Row) {
	r = Row{Mode: m.name, Proxy: proxy}
	fmt.Fprintf(os.Stderr, ">> %s, %s: cold sync of %d services\n", m.name, proxy, par.Services)
	n := b.newNode(ctx)
	p, err := b.start(ctx, n, m, proxy)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	var pid atomic.Int64
	pid.Store(int64(p.Pid))
	stopRSS := make(chan struct{})
	rss := make(chan []plot.Point)
	go func() { rss <- sampleRSS(&pid, p.started, stopRSS) }()
	var logs strings.Builder
	defer func() {
		close(stopRSS)
		r.RSS = <-rss
		p.stop()
		r.log = logs.String() + p.Log()
	}()
	all := append(append([]*service{}, b.sample...), b.bulk...)
	at, err := b.waitSynced(ctx, p, all, par.ColdTimeout)
	if err != nil {
		r.ColdTimedOut = errors.Is(err, errTimeout)
		r.Err = fmt.Sprintf("cold sync: %v after %s", err, par.ColdTimeout)
		return r
	}
	r.Cold = at.Sub(p.started)
	r.RSSSync, r.PeakSync = p.mem()
	r.profile(ctx, p, "heap-synced", "heap?gc=1")
	if r.ConnectLarge, err = b.connectP50(p); err != nil {
		r.Err = "connect: " + err.Error()
	}
	r.scrape(ctx, p, "metrics-synced.txt")

	// Lone changes: each after the proxy had nothing to do for loneGap.
	for i := range par.Lone {
		time.Sleep(loneGap)
		d, ok, err := b.change(ctx, p, b.sample[i%len(b.sample)])
		if err != nil {
			r.Err = "lone change: " + err.Error()
			break
		}
		if !ok {
			r.LoneFailed++
		}
		r.Lone = append(r.Lone, d)
	}

	r.scrape(ctx, p, "metrics-before-churn.txt")

	// Changes under churn.
	stopChurn := make(chan struct{})
	churned := b.churn(ctx, par.Churn, stopChurn)
	cpu0 := cpuSeconds(p.Pid)
	cpuProfile := make(chan struct{})
	go func() {
		defer close(cpuProfile)
		r.profile(ctx, p, "cpu-churn", fmt.Sprintf("profile?seconds=%d", cpuProfileSeconds))
	}()
	for i := range par.Changes {
		d, ok, err := b.change(ctx, p, b.sample[i%len(b.sample)])
		if err != nil {
			r.Err = "change: " + err.Error()
			break
		}
		if !ok {
			r.ChangesFailed++
		}
		r.Latencies = append(r.Latencies, d)
	}
	<-cpuProfile // taken under churn throughout
	close(stopChurn)
	r.ChurnChanges = churned()
	if total := len(r.Latencies) + r.ChurnChanges; total > 0 {
		r.CPUPerChange = (cpuSeconds(p.Pid) - cpu0) / float64(total)
	}
	r.RSSChurn, r.PeakChurn = p.mem()
	r.scrape(ctx, p, "metrics-churned.txt")
	r.ProgrammedLone = programmingMean(r.profiles["metrics-synced.txt"], r.profiles["metrics-before-churn.txt"])
	r.ProgrammedChurn = programmingMean(r.profiles["metrics-before-churn.txt"], r.profiles["metrics-churned.txt"])
	r.profile(ctx, p, "heap-churned", "heap?gc=1")

	// Restart: probes round the sample services all along; one of them
	// changes while the proxy is down.
	stopProbes := make(chan struct{})
	var probes, failed atomic.Int64
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for i := 1; ; i++ {
			select {
			case <-stopProbes:
				return
			case <-time.After(20 * time.Millisecond):
			}
			s := b.sample[i%len(b.sample)]
			probes.Add(1)
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _, err := p.node.HTTPGetHeader(ctx, fmt.Sprintf("http://%s:%d/", s.ip, servicePort))
			cancel()
			if err != nil {
				failed.Add(1)
			}
		}
	}()
	_ = p.Stop(30 * time.Second)
	logs.WriteString(p.Log() + "\n==== restarted\n")
	if _, err := b.flip(ctx, b.sample[0]); err != nil {
		r.Err = "restart: " + err.Error()
	}
	restarted := time.Now() // kube-outpost's prepare included, as in the cold sync
	p2, err := b.start(ctx, n, m, proxy)
	if err != nil {
		r.Err = "restart: " + err.Error()
		close(stopProbes)
		pwg.Wait()
		return r
	}
	p = p2
	pid.Store(int64(p.Pid))
	deadline := restarted.Add(par.ColdTimeout)
	for !b.answers(ctx, p, b.sample[0]) {
		if time.Now().After(deadline) {
			r.Err = "restart: not in sync after " + par.ColdTimeout.String()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.Err == "" || !strings.HasPrefix(r.Err, "restart") {
		r.Restart = time.Since(restarted)
	}
	close(stopProbes)
	pwg.Wait()
	r.RestartProbes, r.RestartFailed = int(probes.Load()), int(failed.Load())
	return r
}

// profile saves kube-outpost's pprof profile at path as name in the row;
// kube-proxy's are not taken.
func (r *Row) profile(ctx context.Context, p *proc, name, path string) {
	if r.Proxy != kubeOutpost {
		return
	}
	if out := fetchProfile(ctx, p, path); out != nil {
		if r.profiles == nil {
			r.profiles = map[string][]byte{}
		}
		r.profiles[name] = out
	}
}

// scrape saves kube-outpost's /metrics as name in the row, beside its
// profiles: its sync durations, full and partial, and its network
// programming latency, as histograms counted since its start.
func (r *Row) scrape(ctx context.Context, p *proc, name string) {
	if r.Proxy != kubeOutpost {
		return
	}
	if out := p.scrape(ctx); out != nil {
		if r.profiles == nil {
			r.profiles = map[string][]byte{}
		}
		r.profiles[name] = out
	}
}

// scrape is kube-outpost's /metrics, on its metrics address in its node;
// nil if it failed.
func (p *proc) scrape(ctx context.Context) []byte {
	out, err := p.node.Command(ctx, "curl", "-sf", "--max-time", "30", "http://127.0.0.1:10249/metrics").Output()
	if err != nil || len(out) == 0 {
		fmt.Fprintf(os.Stderr, ">> /metrics of pid %d: %v\n", p.Pid, err)
		return nil
	}
	return out
}

// fetchProfile is kube-outpost's pprof profile at path (under
// /debug/pprof/, served with profiling = true on its metrics address in
// its node). A profile that fails is logged and nil, never an error of
// the row's.
func fetchProfile(ctx context.Context, p *proc, path string) []byte {
	out, err := p.node.Command(ctx, "curl", "-sf", "--max-time", "60", "http://127.0.0.1:10249/debug/pprof/"+path).Output()
	if err != nil || len(out) == 0 {
		fmt.Fprintf(os.Stderr, ">> profile %s of pid %d: %v\n", path, p.Pid, err)
		return nil
	}
	return out
}

// machine describes this machine and the versions that run.
func machine() []string {
	var out []string
	cpu := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	out = append(out, fmt.Sprintf("%d CPUs (%s), %s", runtime.NumCPU(), cpu, memTotal()))
	run := func(name string, args ...string) string {
		o, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(strings.SplitN(string(o), "\n", 2)[0])
	}
	out = append(out, "kernel "+run("uname", "-r"), run("iptables", "--version"), run("nft", "--version"),
		runtime.Version(), "kube-outpost "+run("git", "describe", "--always", "--dirty"), "kube-proxy v1.37.2 (test/lab/build-k8s.sh)",
		"load average at the start: "+loadavg())
	return out
}

func memTotal() string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	if len(f) < 2 {
		return "?"
	}
	kb, _ := strconv.ParseFloat(f[1], 64)
	return fmt.Sprintf("%.1f GiB RAM", kb/(1<<20))
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}
