//go:build bench

package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

var (
	flagClusters         = flag.Int("clusters", 3, "clusters of the several-clusters benchmark")
	flagClustersServices = flag.Int("clusters-services", 3333, "services in each of those clusters; the one-cluster row has clusters times as many")
	flagClustersMode     = flag.String("clusters-mode", "nftables", "kube-outpost's mode in the several-clusters benchmark")
)

// TestClusters is `make bench-clusters`: the same number of services in
// one cluster and spread over several (each its own apiserver), watched
// by one kube-outpost: its cold sync, memory and change latency, to show
// that its cost follows what it programs, not how many clusters it
// watches. A benchmark: it asserts nothing about the figures.
func TestClusters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	k, per := *flagClusters, *flagClustersServices
	m, ok := allModes[*flagClustersMode]
	if !ok || k < 2 || per < 1 {
		t.Fatalf("want -clusters >= 2, -clusters-services >= 1 and -clusters-mode one of %s", strings.Join(modeNames, ", "))
	}
	ctx := context.Background()
	// One bench per cluster, sharing the lab, the pods and the binaries.
	shared := &bench{t: t, pods: map[byte][]netip.Addr{}, nEndpoints: *flagEndpoints}
	opts := lab.Options{Log: os.Stderr, BPF: shared.ebpfHost([]mode{m}), Clusters: []lab.ClusterOptions{{Name: "solo", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")}}}
	for i := range k {
		opts.Clusters = append(opts.Clusters, lab.ClusterOptions{Name: fmt.Sprintf("c%d", i+1),
			ServiceCIDR: netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 97+i))})
	}
	l, err := lab.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	rep := &ClustersReport{Clusters: k, PerCluster: per, Endpoints: *flagEndpoints, Mode: m.name, Start: time.Now(), Machine: machine()}

	shared.l = l
	shared.binaries()
	shared.addPods(ctx)
	benches := make([]*bench, len(l.Clusters))
	for i, c := range l.Clusters {
		b := &bench{t: t, l: l, c: c, cs: c.Admin, pods: shared.pods, nEndpoints: shared.nEndpoints, outpost: shared.outpost}
		if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		n := per
		if i == 0 {
			n = k * per
		}
		// Each cluster's endpoints have addresses of their own; the
		// names may repeat, each cluster being an apiserver of its own.
		offset := i * k * per
		b.sample = b.create(ctx, "sample", 1, offset)
		b.bulk = b.create(ctx, "svc", n-1, offset+1)
		benches[i] = b
	}

	rep.Rows = append(rep.Rows, runClustersRow(ctx, t, shared, m, benches[:1], fmt.Sprintf("1 cluster × %d", k*per)))
	rep.Rows = append(rep.Rows, runClustersRow(ctx, t, shared, m, benches[1:], fmt.Sprintf("%d clusters × %d", k, per)))
	rep.Took = time.Since(rep.Start)
	out := *flagOut
	if out == "" {
		out = filepath.Join("results", fmt.Sprintf("%s-clusters-%dx%d", rep.Start.UTC().Format("20060102-1504"), k, per))
	}
	if err := rep.Write(out); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "\n%s\nreport: %s\n", rep.Markdown(), filepath.Join(out, "results.md"))
}

// runClustersRow starts one kube-outpost watching the clusters of bs and
// measures it: the cold sync until every service of every cluster is in
// the kernel and each cluster's sample answers, its memory then, and the
// latency of changes round the clusters' samples.
func runClustersRow(ctx context.Context, t *testing.T, shared *bench, m mode, bs []*bench, name string) (r ClustersRow) {
	r.Name = name
	fmt.Fprintf(os.Stderr, ">> %s: cold sync\n", name)
	n := shared.outpostNode(ctx)
	dir := filepath.Join(shared.l.Dir, n.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("mode = %q\nstatus_socket = %q\nstate_dir = %q\nprofiling = true\n%s",
		m.proxyMode, filepath.Join(dir, "status.sock"), filepath.Join(dir, "state"), shared.modeKeys(m))
	for _, b := range bs {
		text += fmt.Sprintf("\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n", b.c.Name, b.c.Kubeconfig, b.c.ServiceCIDR)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	o, err := n.StartOutpost(ctx, shared.env(m), shared.outpost, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{Outpost: o, node: n, m: m, started: started, outpost: shared.outpost}
	defer func() {
		p.stop()
		r.log = p.Log()
	}()

	var all []*service
	for _, b := range bs {
		all = append(all, b.sample...)
		all = append(all, b.bulk...)
	}
	// One check for all clusters at once: every sample answering, then
	// one scan of the rules for every service (waitSynced per cluster
	// would scan the 110,000 rules once per cluster, one after the
	// other, and time the scans, not the daemon).
	want := map[netip.Addr]bool{}
	for _, s := range all {
		want[s.ip] = true
	}
	var last time.Time
	deadline := started.Add(*flagColdTimeout)
	for {
		if time.Now().After(deadline) {
			r.Err = "cold sync: not done after " + flagColdTimeout.String()
			return r
		}
		if exited, err := p.Exited(); exited {
			r.Err = fmt.Sprintf("cold sync: exited: %v\n%s", err, tail(p.Log()))
			return r
		}
		answering := true
		for _, b := range bs {
			answering = answering && b.answers(ctx, p, b.sample[0])
		}
		if answering {
			at := time.Now()
			if n, err := shared.programmed(ctx, p, want); err == nil && n == len(want) {
				last = at
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Services = len(all)
	r.Cold = last.Sub(started)
	r.RSSSync, r.PeakSync = p.mem()
	r.heap = fetchProfile(ctx, p, "heap?gc=1")
	r.HeapSync = p.heapMiB(ctx)

	for i := range *flagChanges {
		b := bs[i%len(bs)]
		s := b.sample[0]
		at, err := b.flip(ctx, s)
		if err != nil {
			r.Err = "change: " + err.Error()
			break
		}
		for !b.answers(ctx, p, s) {
			if time.Since(at) > time.Minute {
				r.Err = "change: not seen within a minute"
				return r
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.Latencies = append(r.Latencies, time.Since(at))
	}
	r.RSSChanged, r.PeakChanged = p.mem()
	return r
}

// outpostNode is newNode without the Node object, which only kube-proxy
// needs.
func (b *bench) outpostNode(ctx context.Context) *lab.Node {
	b.nodes++
	n, err := b.l.AddNode(ctx, fmt.Sprintf("row%d", b.nodes))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := n.RouteAsHost(); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// heapMiB is the daemon's Go heap in use (go_memstats_heap_inuse_bytes
// of its /metrics), just after the heap profile's collection.
func (p *proc) heapMiB(ctx context.Context) float64 {
	out := p.scrape(ctx)
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "go_memstats_heap_inuse_bytes "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f / (1 << 20)
		}
	}
	return 0
}
