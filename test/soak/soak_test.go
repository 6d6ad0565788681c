//go:build soak

package soak

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// The soak's cluster allocates ClusterIPs from serviceRange.
var serviceRange = netip.MustParsePrefix("10.96.0.0/16")

const (
	namespace   = "soak"
	metricsURL  = "http://127.0.0.1:10249/metrics" // the default metrics_address, in the host namespace
	writeTimout = 10 * time.Second                 // of one write to the apiserver
	// judgeLag is how long a probe waits to be judged: longer than any
	// write that began before it ended can take, so that its state is
	// recorded by then.
	judgeLag     = 15 * time.Second
	probeTimeout = 2 * time.Second
	// followTimeout is a following probe's: a SYN to a ClusterIP not yet
	// programmed leaves for the router, which has no route for it; when
	// its ICMP unreachable is rate-limited, the connect would hang for
	// probeTimeout, and the change's latency be that long.
	followTimeout = 250 * time.Millisecond
	maxInFlight   = 64
)

// TestSoak runs churn against a kube-outpost daemon in the lab for
// SOAK_DURATION with continuous probes, and writes a report with plots to
// SOAK_OUT. `make soak DURATION=1h` runs it; see docs/testing.md.
func TestSoak(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the soak needs root (network namespaces)")
	}
	p := paramsFromEnv(t)
	// go test's own -timeout is off (`make soak` passes -timeout 0): the
	// soak knows how long it should take.
	watchdog := time.AfterFunc(p.Duration+15*time.Minute, func() {
		panic(fmt.Sprintf("soak: still running 15 minutes after its duration of %s", p.Duration))
	})
	defer watchdog.Stop()
	t.Logf("soak: %s of churn, %d services (%d without endpoints), %d pods, %.1f changes/s, a probe every %s, seed %d; report in %s",
		p.Duration, p.Services, p.Empty, p.Pods, p.ChurnRate, p.ProbeInterval, p.Seed, p.Out)

	s := setUp(t, &p)
	s.warmUp()
	r := s.run()
	if err := os.MkdirAll(p.Out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.Out, "daemon.log"), []byte(s.daemon.Log()), 0o644); err != nil {
		t.Error(err)
	}
	if err := r.write(p.Out); err != nil {
		t.Fatalf("writing the report: %v", err)
	}
	report, _ := filepath.Abs(filepath.Join(p.Out, "report.md"))
	lat := make([]time.Duration, len(r.latencies))
	for i, l := range r.latencies {
		lat[i] = l.d
	}
	t.Logf("soak done: %d probes, %d failed; %d changes, latency p50 %s p99 %s max %s; sync errors %v; RSS %s; report %s",
		r.sent, r.probes.failed(), len(r.latencies), ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(percentile(lat, 100)),
		r.end.value(syncErrors, ""), rssSummary(r.rssV), report)
	for _, f := range r.failures() {
		t.Error(f)
	}
}

func rssSummary(v rssVerdict) string {
	if !v.Judged {
		return fmt.Sprintf("not judged (%d samples in the second half)", v.Samples)
	}
	return fmt.Sprintf("%+.2f MiB over the second half (limit %.1f MiB), mean %.1f MiB", mib(v.Growth), mib(v.Limit), mib(v.Mean))
}

func paramsFromEnv(t *testing.T) params {
	t.Helper()
	p := params{
		Duration:      5 * time.Minute,
		Services:      50,
		Pods:          8,
		ChurnRate:     3,
		ProbeInterval: 100 * time.Millisecond,
		FollowEvery:   50 * time.Millisecond,
		FollowTimeout: 30 * time.Second,
		Grace:         10 * time.Second,
		Mode:          "iptables",
		Routed:        true,
		Seed:          uint64(time.Now().UnixNano()),
		Out:           "../../bin/soak", // go test runs in the package's directory
	}
	dur := func(key string, d *time.Duration) {
		if v := os.Getenv(key); v != "" {
			var err error
			if *d, err = time.ParseDuration(v); err != nil || *d <= 0 {
				t.Fatalf("%s=%q: want a positive Go duration such as 5m or 1h", key, v)
			}
		}
	}
	num := func(key string, lo, hi float64) (float64, bool) {
		v := os.Getenv(key)
		if v == "" {
			return 0, false
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < lo || f > hi {
			t.Fatalf("%s=%q: want a number from %v to %v", key, v, lo, hi)
		}
		return f, true
	}
	dur("SOAK_DURATION", &p.Duration)
	dur("SOAK_PROBE_INTERVAL", &p.ProbeInterval)
	if f, ok := num("SOAK_SERVICES", 4, 1000); ok {
		p.Services = int(f)
	}
	if f, ok := num("SOAK_CHURN", 0.1, 50); ok {
		p.ChurnRate = f
	}
	if v := os.Getenv("SOAK_SEED"); v != "" {
		var err error
		if p.Seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: want the seed a report names", v)
		}
	}
	if v := os.Getenv("SOAK_MODE"); v != "" {
		p.Mode = v
	}
	if v := os.Getenv("SOAK_ROUTED"); v == "0" {
		p.Routed = false
	}
	if v := os.Getenv("SOAK_OUT"); v != "" {
		p.Out = v
	}
	p.Empty = max(1, p.Services/10)
	// About 200 samples whatever the duration, every 1 to 5 s.
	p.RSSEvery = min(5*time.Second, max(time.Second, p.Duration/200))
	return p
}

// soakService is one service the churn plays with.
type soakService struct {
	i     int // in soak.svcs
	name  string
	empty bool // deliberately without endpoints, never changed
	// Guarded by soak.mu.
	h    history
	busy bool   // a change is being made or followed
	rv   string // resourceVersion of its EndpointSlice, as last written
}

type soak struct {
	t      *testing.T
	p      *params
	lab    *lab.Lab
	api    kubernetes.Interface
	client *lab.Client // the routed client; nil without
	daemon *lab.Outpost
	pods   []string
	podIPs map[string]string // by pod name
	began  time.Time
	rnd    *rand.Rand // of the churn goroutine only
	http   *http.Client

	mu        sync.Mutex
	svcs      []*soakService
	pending   []probe // probes waiting to be judged
	latencies []latency
	unseen    []string
	ops       map[string]int
	opErrors  []string
	rss       []point
	heap      []point
	gor       []point

	probes   tally
	sent     atomic.Int64
	skipped  atomic.Int64
	inFlight chan struct{}
	diagBusy chan struct{} // diagnose.go
	followWG sync.WaitGroup
	probeWG  sync.WaitGroup
	warmedUp time.Duration // after the daemon's start
	// The RSS sampler and the scraper run from the warm-up on.
	stopSampling context.CancelFunc
	sampling     sync.WaitGroup
}

// setUp starts the lab (one cluster, the pods, a routed client) and the
// daemon.
func setUp(t *testing.T, p *params) *soak {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "soak", ServiceCIDR: serviceRange}},
		Log:      os.Stderr,
	})
	if err != nil {
		t.Fatalf("starting the lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	s := &soak{
		t: t, p: p, lab: l, api: l.Cluster("soak").Admin,
		rnd:      rand.New(rand.NewPCG(p.Seed, p.Seed>>1|1)),
		ops:      map[string]int{},
		podIPs:   map[string]string{},
		inFlight: make(chan struct{}, maxInFlight),
		diagBusy: make(chan struct{}, 1),
		http: &http.Client{
			Transport: &http.Transport{DialContext: l.DialHost, DisableKeepAlives: true, Proxy: nil},
			Timeout:   5 * time.Second,
		},
	}
	for i := 1; i <= p.Pods; i++ {
		name := fmt.Sprintf("p%d", i)
		pod, err := l.AddPod(ctx, name, []int{8080}, []int{5353})
		if err != nil {
			t.Fatal(err)
		}
		s.pods = append(s.pods, name)
		s.podIPs[name] = pod.IP.String()
	}
	routed := ""
	if p.Routed {
		if s.client, err = l.AddRoutedClient(ctx, "soak"); err != nil {
			t.Fatal(err)
		}
		routed = fmt.Sprintf("routed_clients = [%q]\n", netip.PrefixFrom(s.client.IP, 32))
		// The host refuses the client's UDP to a ClusterIP without
		// endpoints with an ICMP port unreachable, which the kernel
		// rate-limits per destination (net.ipv4.icmp_ratelimit: one a
		// second after a burst of 6). The soak is refused far more often
		// than a real client, and a refusal the kernel did not send
		// looks like a datagram dropped: no limit in the host namespace.
		// /proc/sys/net is the namespace of the thread that opens it.
		if err := lab.InNetns(l.HostNS, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/icmp_ratelimit", []byte("0"), 0o644)
		}); err != nil {
			t.Fatalf("net.ipv4.icmp_ratelimit in the host namespace: %v", err)
		}
	}

	binary := os.Getenv("KO_SOAK_BINARY")
	if binary == "" {
		if binary, err = lab.BuildOutpost(ctx, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	sockDir, err := os.MkdirTemp("", "ko-soak-") // a unix socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	// The defaults, but for a full sync every minute instead of every
	// hour, so that the soak also runs many of those.
	// A state_dir of its own: the default is the machine's. Debug logs
	// each sync, for the lines printed beside a failed probe.
	p.Config = fmt.Sprintf("mode = %q\nlog_level = \"debug\"\nfull_sync_period = \"1m\"\nstatus_socket = %q\nstate_dir = %q\n%s\n[[clusters]]\nname = \"soak\"\nkubeconfig = %q\nservice_cidrs = [%q]\n",
		p.Mode, filepath.Join(sockDir, "status.sock"), filepath.Join(sockDir, "state"), routed, l.Cluster("soak").Kubeconfig, serviceRange)
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfgPath, []byte(p.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	s.began = time.Now()
	if s.daemon, err = l.StartOutpost(ctx, binary, cfgPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if exited, _ := s.daemon.Exited(); !exited {
			s.daemon.Stop(15 * time.Second)
		}
	})
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.daemon.Pid)); err != nil || strings.TrimSpace(string(comm)) != "kube-outpost" {
		// `ip netns exec` may not have exec'ed it yet.
		time.Sleep(500 * time.Millisecond)
		if comm, err = os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.daemon.Pid)); err != nil || strings.TrimSpace(string(comm)) != "kube-outpost" {
			t.Fatalf("pid %d is %q, not kube-outpost (%v): RSS would be measured of the wrong process", s.daemon.Pid, comm, err)
		}
	}
	return s
}

func (s *soak) since(at time.Time) float64 { return at.Sub(s.began).Seconds() }

// warmUp creates every service with its endpoints, and waits until each
// answers (or, without endpoints, is refused).
func (s *soak) warmUp() {
	t := s.t
	ctx := context.Background()
	sctx, stop := context.WithCancel(ctx)
	s.stopSampling = stop
	t.Cleanup(stop)
	s.sampling.Add(2)
	go func() { defer s.sampling.Done(); s.sampleRSS(sctx) }()
	go func() { defer s.sampling.Done(); s.scrapeLoop(sctx) }()
	if _, err := s.api.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for i := 0; i < s.p.Services; i++ {
		// Empty of them, spread evenly: the 10th, 20th, ...
		empty := i*s.p.Empty/s.p.Services != (i+1)*s.p.Empty/s.p.Services
		sv := &soakService{i: i, name: fmt.Sprintf("s%02d", i), empty: empty}
		s.svcs = append(s.svcs, sv)
		var pods []string
		if !sv.empty {
			pods = s.pick(2+s.rnd.IntN(2), nil)
		}
		if err := s.create(sv); err != nil {
			t.Fatal(err)
		}
		if len(pods) > 0 {
			if err := s.writeSlice(sv, pods, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	start := time.Now()
	deadline := start.Add(3 * time.Minute)
	for i, sv := range s.svcs {
		for {
			s.mu.Lock()
			cur := sv.h.current()
			s.mu.Unlock()
			p := s.request(sv, "tcp", "host", cur.vip, probeTimeout)
			o := judge(&history{states: []state{cur}}, p, 0)
			if o == answered || o == refusedAsExpected {
				break
			}
			if exited, err := s.daemon.Exited(); exited {
				t.Fatalf("kube-outpost exited: %v\n%s", err, s.daemon.Log())
			}
			if time.Now().After(deadline) {
				t.Fatalf("warm-up: service %d of %d (%s at %s) not programmed after %s: %s (%v)\n%s",
					i+1, len(s.svcs), sv.name, cur.vip, time.Since(start).Round(time.Second), o, p.err, s.daemon.Log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	s.warmedUp = time.Since(s.began)
	t.Logf("warm-up: %d services programmed, %s after the daemon started", len(s.svcs), s.warmedUp.Round(100*time.Millisecond))
}

// pick returns n distinct pods, none of those in not.
func (s *soak) pick(n int, not []string) []string {
	var free []string
	for _, p := range s.pods {
		if !contains(not, p) {
			free = append(free, p)
		}
	}
	s.rnd.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	return free[:min(n, len(free))]
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// run churns, probes and samples for the duration, then collects the result.
func (s *soak) run() *result {
	t := s.t
	churnFrom := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), churnFrom.Add(s.p.Duration))
	defer cancel()
	probeCtx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()

	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); s.judgeLoop(probeCtx) }()
	go func() { defer bg.Done(); s.probeLoop(probeCtx) }()
	base, err := s.scrape()
	if err != nil {
		t.Fatalf("scraping the daemon's metrics: %v", err)
	}

	// Progress once a minute, and a daemon that exits ends the soak.
	diedDuring := ""
	progress := time.NewTicker(time.Minute)
	churnDone := make(chan struct{})
	go func() { defer close(churnDone); s.churn(ctx) }()
	died := s.daemon.Done()
loop:
	for {
		select {
		case <-churnDone:
			break loop
		case <-died:
			died = nil
			_, err := s.daemon.Exited()
			diedDuring = fmt.Sprintf("after %s of churn: %v", time.Since(churnFrom).Round(time.Second), err)
			cancel()
		case <-progress.C:
			s.logProgress(churnFrom)
		}
	}
	progress.Stop()
	churnTo := time.Now()
	s.followWG.Wait() // every change followed to its end (FollowTimeout at most)
	stopProbes()
	s.probeWG.Wait()
	bg.Wait()
	s.stopSampling()
	s.sampling.Wait()
	s.sampleRSSOnce()
	end, err := s.scrape()
	if err != nil {
		t.Errorf("scraping the daemon's metrics at the end: %v", err)
	}
	s.judgeDue(true)

	r := &result{
		p: *s.p, began: s.began, churnFrom: s.since(churnFrom), churnTo: s.since(churnTo),
		rss: s.rss, heap: s.heap, goroutines: s.gor, latencies: s.latencies, unseen: s.unseen,
		probes: &s.probes, sent: int(s.sent.Load()), skipped: int(s.skipped.Load()),
		ops: s.ops, opErrors: s.opErrors, end: end, diedDuring: diedDuring, warmUp: s.warmedUp,
		version: buildVersion(base),
	}
	if end != nil {
		r.programming = minus(end.histogram(programming), base.histogram(programming))
	}
	if diedDuring == "" {
		r.stopErr = s.daemon.Stop(15 * time.Second)
	}
	r.rssV = judgeRSS(r.rss, r.churnFrom, r.churnTo)
	return r
}

func (s *soak) logProgress(churnFrom time.Time) {
	s.mu.Lock()
	var ds []time.Duration
	for _, l := range s.latencies {
		ds = append(ds, l.d)
	}
	rss := 0.0
	if len(s.rss) > 0 {
		rss = s.rss[len(s.rss)-1].v
	}
	ops := 0
	for _, n := range s.ops {
		ops += n
	}
	s.mu.Unlock()
	s.t.Logf("%s of %s: %d changes, latency p99 %s; %d probes, %d answered, %d refused as expected, %d FAILED; RSS %.1f MiB",
		time.Since(churnFrom).Round(time.Second), s.p.Duration, ops, ms(percentile(ds, 99)), s.sent.Load(),
		s.probes.total(answered), s.probes.total(refusedAsExpected), s.probes.failed(), mib(rss))
}

// churn makes ChurnRate changes a second, at random moments (a Poisson
// process): changes in step with the daemon's syncs would all meet a sync
// under way, or its settling, the same way, and the latency measured be
// that of one phase between the two clocks.
func (s *soak) churn(ctx context.Context) {
	for {
		wait := time.Duration(s.rnd.ExpFloat64() / s.p.ChurnRate * float64(time.Second))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if sv := s.idle(); sv != nil { // else everything is busy: skip one
			s.change(sv)
		}
	}
}

// idle picks a service that may change now, and marks it busy.
func (s *soak) idle() *soakService {
	s.mu.Lock()
	defer s.mu.Unlock()
	var free []*soakService
	for _, sv := range s.svcs {
		if !sv.busy && !sv.empty {
			free = append(free, sv)
		}
	}
	if len(free) == 0 {
		return nil
	}
	sv := free[s.rnd.IntN(len(free))]
	sv.busy = true
	return sv
}

// change makes one change to sv, which is busy, and follows it until a
// probe sees it; sv stays busy until then.
func (s *soak) change(sv *soakService) {
	s.mu.Lock()
	cur := sv.h.current()
	s.mu.Unlock()
	pods := cur.pods
	if cur.unknown || !cur.present {
		// A write failed: make it whole again.
		s.op(sv, "recreate", s.pick(2+s.rnd.IntN(2), nil))
		return
	}
	if len(pods) == 0 {
		s.op(sv, "back from zero", s.pick(2+s.rnd.IntN(2), nil))
		return
	}
	switch x := s.rnd.Float64(); {
	case x < 0.35: // replace an endpoint
		keep := append([]string(nil), pods...)
		s.rnd.Shuffle(len(keep), func(i, j int) { keep[i], keep[j] = keep[j], keep[i] })
		keep = keep[1:]
		s.op(sv, "replace an endpoint", append(keep, s.pick(1, pods)...))
	case x < 0.5:
		s.op(sv, "scale to zero", nil)
	case x < 0.65:
		s.op(sv, "delete and recreate the service", s.pick(2+s.rnd.IntN(2), nil))
	case x < 0.85 && len(pods) == 2:
		s.op(sv, "add an endpoint", append(append([]string(nil), pods...), s.pick(1, pods)...))
	case x < 0.85:
		s.op(sv, "remove an endpoint", pods[1:])
	default:
		s.op(sv, "update the service (labels only)", pods)
	}
}

// op writes one change and starts following it.
func (s *soak) op(sv *soakService, kind string, pods []string) {
	s.mu.Lock()
	s.ops[kind]++
	s.mu.Unlock()
	var err error
	var at time.Time
	switch kind {
	case "recreate", "delete and recreate the service":
		err = s.recreate(sv, pods, &at)
	case "update the service (labels only)":
		ctx, cancel := context.WithTimeout(context.Background(), writeTimout)
		patch := fmt.Sprintf(`{"metadata":{"labels":{"soak-touch":"%d"}}}`, time.Now().UnixNano())
		_, err = s.api.CoreV1().Services(namespace).Patch(ctx, sv.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		cancel()
		if err != nil {
			s.failedWrite(sv, time.Now(), kind, err)
		}
		s.done(sv)
		return
	default:
		at = time.Now()
		err = s.writeSlice(sv, pods, at)
	}
	if err != nil {
		s.done(sv)
		return
	}
	s.mu.Lock()
	vip := sv.h.current().vip
	s.mu.Unlock()
	var want func(probe) bool
	switch kind {
	case "remove an endpoint":
		s.done(sv) // an absence: no probe can see it at once
		return
	case "scale to zero":
		want = func(p probe) bool { return refusal(p.err) }
	case "replace an endpoint", "add an endpoint":
		added := pods[len(pods)-1]
		want = func(p probe) bool { return p.err == nil && p.answer == added }
	default: // back from zero, recreated: any of its endpoints
		want = func(p probe) bool { return p.err == nil && contains(pods, p.answer) }
	}
	s.followWG.Add(1)
	go func() {
		defer s.followWG.Done()
		defer s.done(sv)
		s.follow(sv, kind, at, vip, want)
	}()
}

func (s *soak) done(sv *soakService) {
	s.mu.Lock()
	sv.busy = false
	s.mu.Unlock()
}

// follow probes sv every FollowEvery until want says a probe saw the change
// written at `at`.
func (s *soak) follow(sv *soakService, kind string, at time.Time, vip netip.Addr, want func(probe) bool) {
	for {
		p := s.request(sv, "tcp", "host", vip, followTimeout)
		if !p.timedOut {
			// Cut short on purpose: the round-robin probes judge the
			// service with the full timeout.
			s.submit(p)
		}
		if want(p) {
			s.mu.Lock()
			s.latencies = append(s.latencies, latency{at: s.since(at), kind: kind, service: sv.name, d: p.end.Sub(at)})
			s.mu.Unlock()
			return
		}
		if time.Since(at) > s.p.FollowTimeout {
			res := fmt.Sprintf("answer %q", p.answer)
			if p.err != nil {
				res = p.err.Error()
			}
			s.mu.Lock()
			s.unseen = append(s.unseen, fmt.Sprintf("%s %s/%s at %s: %s; last probe: %s",
				fmtOffset(at.Sub(s.began)), namespace, sv.name, vip, kind, res))
			s.mu.Unlock()
			return
		}
		time.Sleep(s.p.FollowEvery)
	}
}

// failedWrite records that a write failed: what the apiserver holds is not
// known until the next write succeeds.
func (s *soak) failedWrite(sv *soakService, at time.Time, what string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := sv.h.current()
	cur.at, cur.unknown = at, true
	sv.h.add(cur)
	s.opErrors = append(s.opErrors, fmt.Sprintf("%s %s/%s: %s: %v", fmtOffset(at.Sub(s.began)), namespace, sv.name, what, err))
}

// record appends a state written at `at`.
func (s *soak) record(sv *soakService, st state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv.h.add(st)
}

var (
	httpPort = corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}
	dnsPort  = corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)}
)

// create creates sv's Service, without endpoints.
func (s *soak) create(sv *soakService) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimout)
	defer cancel()
	at := time.Now()
	svc, err := s.api.CoreV1().Services(namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: sv.name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{httpPort, dnsPort}},
	}, metav1.CreateOptions{})
	if err != nil {
		s.failedWrite(sv, at, "create the service", err)
		return err
	}
	vip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		s.failedWrite(sv, at, "create the service", fmt.Errorf("ClusterIP %q: %w", svc.Spec.ClusterIP, err))
		return err
	}
	s.mu.Lock()
	sv.rv = ""
	s.mu.Unlock()
	s.record(sv, state{at: at, present: true, vip: vip})
	return nil
}

// recreate deletes sv's Service and EndpointSlice (there is no garbage
// collector in the lab) and creates them again, with a new ClusterIP; *at
// is when the new slice's write began.
func (s *soak) recreate(sv *soakService, pods []string, at *time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimout)
	defer cancel()
	del := time.Now()
	err := s.api.CoreV1().Services(namespace).Delete(ctx, sv.name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		s.failedWrite(sv, del, "delete the service", err)
		return err
	}
	s.record(sv, state{at: del, present: false})
	err = s.api.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, sv.name+"-1", metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		s.failedWrite(sv, time.Now(), "delete the EndpointSlice", err)
		return err
	}
	if err := s.create(sv); err != nil {
		return err
	}
	*at = time.Now()
	return s.writeSlice(sv, pods, *at)
}

// writeSlice creates or replaces sv's EndpointSlice with pods as its ready
// endpoints, annotated with trigger as last-change-trigger-time unless it
// is zero, and records the state.
func (s *soak) writeSlice(sv *soakService, pods []string, trigger time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimout)
	defer cancel()
	s.mu.Lock()
	cur := sv.h.current()
	rv := sv.rv
	s.mu.Unlock()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: sv.name + "-1", ResourceVersion: rv,
			Labels: map[string]string{discoveryv1.LabelServiceName: sv.name, discoveryv1.LabelManagedBy: "kube-outpost-soak"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)},
			{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](5353)},
		},
	}
	if !trigger.IsZero() {
		es.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger.UTC().Format(time.RFC3339Nano)}
	}
	for _, name := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{s.podIPs[name]},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	at := time.Now()
	api := s.api.DiscoveryV1().EndpointSlices(namespace)
	var got *discoveryv1.EndpointSlice
	var err error
	if rv == "" {
		got, err = api.Create(ctx, es, metav1.CreateOptions{})
	} else {
		got, err = api.Update(ctx, es, metav1.UpdateOptions{})
	}
	if err != nil {
		s.failedWrite(sv, at, "write the EndpointSlice", err)
		s.mu.Lock()
		sv.rv = "" // the next write of this service recreates it whole
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	sv.rv = got.ResourceVersion
	s.mu.Unlock()
	s.record(sv, state{at: at, present: true, vip: cur.vip, pods: append([]string(nil), pods...)})
	return nil
}

// probeLoop sends one probe every ProbeInterval, round-robin over the
// services; each full round alternates TCP and UDP, each second round the
// host and the routed client.
func (s *soak) probeLoop(ctx context.Context) {
	tick := time.NewTicker(s.p.ProbeInterval)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n := len(s.svcs)
		sv, round := s.svcs[k%n], k/n
		proto, from := "tcp", "host"
		if round%2 == 1 {
			proto = "udp"
		}
		if s.client != nil && (round/2)%2 == 1 {
			from = "client"
		}
		s.mu.Lock()
		cur := sv.h.current()
		s.mu.Unlock()
		if !cur.present {
			continue // between delete and create: no ClusterIP to probe
		}
		select {
		case s.inFlight <- struct{}{}:
		default:
			s.skipped.Add(1)
			continue
		}
		s.probeWG.Add(1)
		go func() {
			defer s.probeWG.Done()
			defer func() { <-s.inFlight }()
			p := s.request(sv, proto, from, cur.vip, probeTimeout)
			if worthDiagnosing(p) && s.failsSoFar(p) {
				p.diag = s.diagnose(p.vip)
			}
			s.submit(p)
		}()
	}
}

// request sends one probe to sv at vip and returns it, not yet judged.
func (s *soak) request(sv *soakService, proto, from string, vip netip.Addr, timeout time.Duration) probe {
	p := probe{svc: sv.i, name: namespace + "/" + sv.name, proto: proto, from: from, vip: vip, start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	switch {
	case proto == "tcp" && from == "host":
		p.answer, p.err = s.lab.HTTPGet(ctx, "http://"+netip.AddrPortFrom(vip, 80).String()+"/")
	case proto == "tcp":
		p.answer, p.err = s.client.HTTPGet(ctx, "http://"+netip.AddrPortFrom(vip, 80).String()+"/")
	case from == "host":
		p.answer, p.err = s.lab.UDPRequest(ctx, netip.AddrPortFrom(vip, 53).String(), "ping")
	default:
		p.answer, p.err = s.client.UDPRequest(ctx, netip.AddrPortFrom(vip, 53).String(), "ping")
	}
	p.end = time.Now()
	p.timedOut = p.err != nil && ctx.Err() != nil
	return p
}

// submit queues a probe to be judged once every write that began before it
// ended is recorded.
func (s *soak) submit(p probe) {
	s.sent.Add(1)
	s.mu.Lock()
	s.pending = append(s.pending, p)
	s.mu.Unlock()
}

func (s *soak) judgeLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.judgeDue(false)
		}
	}
}

// judgeDue judges the pending probes that ended more than judgeLag ago, or
// all of them.
func (s *soak) judgeDue(all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := time.Now().Add(-judgeLag)
	var keep []probe
	for _, p := range s.pending {
		if !all && p.end.After(cut) {
			keep = append(keep, p)
			continue
		}
		o := judge(&s.svcs[p.svc].h, p, s.p.Grace)
		if line := s.probes.add(p, o, s.began); line != "" {
			s.t.Logf("probe failed: %s\n%s%s", line, p.diag, daemonLinesNear(s.daemon.Log(), p.start, p.end))
		}
	}
	s.pending = keep
}

func (s *soak) sampleRSS(ctx context.Context) {
	tick := time.NewTicker(s.p.RSSEvery)
	defer tick.Stop()
	for {
		s.sampleRSSOnce()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *soak) sampleRSSOnce() {
	b, err := s.daemon.RSS()
	if err != nil {
		return // exited: run notices
	}
	s.mu.Lock()
	s.rss = append(s.rss, point{s.since(time.Now()), float64(b)})
	s.mu.Unlock()
}

// scrapeLoop reads the daemon's heap and goroutines every 15 s, and says
// when a sync fails.
func (s *soak) scrapeLoop(ctx context.Context) {
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	errs := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m, err := s.scrape()
		if err != nil {
			s.t.Logf("scraping the daemon's metrics: %v", err)
			continue
		}
		if n := m.value(syncErrors, ""); n > errs {
			s.t.Logf("%s: %v (was %v)", syncErrors, n, errs)
			errs = n
		}
	}
}

// scrape reads the daemon's metrics, and records its heap and goroutines.
func (s *soak) scrape() (samples, error) {
	resp, err := s.http.Get(metricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", metricsURL, resp.Status)
	}
	m, err := parseMetrics(string(body))
	if err != nil {
		return nil, err
	}
	now := s.since(time.Now())
	s.mu.Lock()
	s.heap = append(s.heap, point{now, m.value("go_memstats_heap_inuse_bytes", "")})
	s.gor = append(s.gor, point{now, m.value("go_goroutines", "")})
	s.mu.Unlock()
	return m, nil
}
