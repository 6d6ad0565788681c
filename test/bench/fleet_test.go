//go:build bench

package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

var (
	flagFleet            = flag.String("fleet", "1,10,50", "comma-separated fleet sizes: daemons at once against the one apiserver (a baseline of none always runs first)")
	flagFleetServices    = flag.Int("fleet-services", 1000, "services in the cluster of the fleet benchmark")
	flagFleetEndpoints   = flag.Int("fleet-endpoints", 10, "endpoints per service of the fleet benchmark")
	flagFleetChanges     = flag.Int("fleet-changes", 50, "EndpointSlice changes per fleet row, after the rest")
	flagFleetChangeEvery = flag.Duration("fleet-change-every", 100*time.Millisecond, "time between two of those changes")
	flagFleetRest        = flag.Duration("fleet-rest", time.Minute, "how long the apiserver is measured at rest after the fleet synced")
	flagFleetSettle      = flag.Duration("fleet-settle", 30*time.Second, "the wait after the apiserver's (re)start, before a row begins")
	flagFleetSyncTimeout = flag.Duration("fleet-sync-timeout", 5*time.Minute, "give the fleet's sync (and its catching up with the changes) up after this")
	flagFleetVariants    = flag.String("fleet-variants", "kube-outpost,kube-outpost-no-watchlist,kube-proxy", "comma-separated daemons to run fleets of")
	flagFleetMode        = flag.String("fleet-mode", "nftables", "the daemons' datapath: iptables, iptables-legacy or nftables")
)

// fleetVariants maps -fleet-variants to the rows' names.
var fleetVariants = map[string]string{
	"kube-outpost":              fleetOutpost,
	"kube-outpost-no-watchlist": fleetOutpostNoWatchList,
	"kube-proxy":                fleetKubeProxy,
}

// fleet is the state of a fleet run: one lab cluster, its load, and a
// loopback node per daemon of the largest fleet, each with its relay.
type fleet struct {
	*bench
	p       FleetParams
	m       mode
	members []*member
	// want are the ClusterIPs of the load, which a synced daemon's rules
	// hold every one of.
	want map[netip.Addr]bool
	// rows counts the fleets started, to give each its own state.
	rows int
}

// member is where one daemon of the fleet runs: a loopback node whose
// only way to the apiserver is its relay, which counts the bytes.
type member struct {
	node  *lab.Node
	relay *lab.Relay
	// The kubeconfigs of each daemon, pointed at the relay.
	outpostKC, proxyKC string
}

// TestFleet is `make bench-fleet`: the cost to one apiserver of N
// daemons watching it, for each fleet size and daemon, over a baseline
// of none. A benchmark: it asserts nothing about the figures.
func TestFleet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	p := FleetParams{Services: *flagFleetServices, Endpoints: *flagFleetEndpoints, Changes: *flagFleetChanges,
		ChangeEvery: *flagFleetChangeEvery, Settle: *flagFleetSettle, Rest: *flagFleetRest,
		SyncTimeout: *flagFleetSyncTimeout, Mode: *flagFleetMode}
	for _, s := range strings.Split(*flagFleet, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			t.Fatalf("-fleet: %q is not a fleet size (1 or more)", s)
		}
		p.Fleet = append(p.Fleet, n)
	}
	slices.Sort(p.Fleet)
	var variants []string
	for _, v := range strings.Split(*flagFleetVariants, ",") {
		name, ok := fleetVariants[v]
		if !ok {
			t.Fatalf("-fleet-variants: unknown %q", v)
		}
		variants = append(variants, name)
	}
	// Not ebpf mode: the fleet's loopback nodes have no bpffs of their
	// own, and what the fleet measures, the apiserver's cost, is the
	// same in every mode.
	m, ok := allModes[p.Mode]
	if !ok || m.ebpf || p.Services < 1 || p.Endpoints < 1 {
		t.Fatalf("want -fleet-mode among iptables, iptables-legacy, nftables, and -fleet-services, -fleet-endpoints >= 1")
	}
	rep := &FleetReport{Params: p, Start: time.Now(), Machine: machine()}
	ctx := context.Background()
	f := &fleet{bench: &bench{t: t, pods: map[byte][]netip.Addr{}, nEndpoints: p.Endpoints}, p: p, m: m}
	var err error
	f.l, err = lab.Start(ctx, lab.Options{Clusters: []lab.ClusterOptions{{Name: "fleet", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")}}, Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.l.Close() })
	f.c = f.l.Clusters[0]
	f.cs = f.c.Admin
	if f.kpConfig, err = f.c.ServiceAccountKubeconfig(ctx, "kube-system", "kube-proxy", "system:node-proxier"); err != nil {
		t.Fatal(err)
	}
	f.binaries()
	if _, err := f.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.bulk = f.create(ctx, "svc", p.Services, 0)
	f.want = map[netip.Addr]bool{}
	for _, s := range f.bulk {
		f.want[s.ip] = true
	}
	f.addMembers(ctx, p.Fleet[len(p.Fleet)-1])
	rep.Uses = f.uses(ctx)

	rows := []struct {
		variant string
		n       int
	}{{fleetBaseline, 0}}
	for _, v := range variants {
		for _, n := range p.Fleet {
			rows = append(rows, struct {
				variant string
				n       int
			}{v, n})
		}
	}
	for _, row := range rows {
		r := f.run(ctx, row.variant, row.n)
		rep.Rows = append(rep.Rows, r)
		fmt.Fprintf(os.Stderr, ">> %s, N=%d: synced in %s, sync CPU %.2f s, rest CPU %.2f s over %s, RSS %.0f MiB, changes %d in %s (%d late)%s\n",
			r.Variant, r.N, fmtDur(r.Sync), r.SyncCPU, r.RestCPU, fmtDur(r.Rest), r.RestRSS, r.Changes, fmtDur(r.ChangesWindow), r.ChangesLate, errSuffix(r.Err))
	}
	rep.Took = time.Since(rep.Start)
	rep.Machine = append(rep.Machine, "load average at the end: "+loadavg())
	out := *flagOut
	if out == "" {
		out = filepath.Join("results", fmt.Sprintf("%s-fleet-%dx%d", rep.Start.UTC().Format("20060102-1504"), p.Services, p.Endpoints))
	}
	if err := rep.Write(out); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "\n%s\n%s\nreport: %s\n", rep.PerDaemonTable(), rep.RawTable(), filepath.Join(out, "results.md"))
}

// addMembers makes n loopback nodes, each with its Node object (which
// kube-proxy waits for), its relay and a kubeconfig through it for each
// daemon.
func (f *fleet) addMembers(ctx context.Context, n int) {
	for i := range n {
		node, err := f.l.AddLoopbackNode(ctx, fmt.Sprintf("fleet%d", i))
		if err != nil {
			f.t.Fatal(err)
		}
		if err := node.Register(ctx, f.cs); err != nil {
			f.t.Fatal(err)
		}
		r, err := f.c.RelayIn(node.NS)
		if err != nil {
			f.t.Fatal(err)
		}
		dir := filepath.Join(f.l.Dir, node.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			f.t.Fatal(err)
		}
		mb := &member{node: node, relay: r}
		if mb.outpostKC, err = r.KubeconfigFor(f.c.Kubeconfig, filepath.Join(dir, "outpost.kubeconfig")); err != nil {
			f.t.Fatal(err)
		}
		if mb.proxyKC, err = r.KubeconfigFor(f.kpConfig, filepath.Join(dir, "kube-proxy.kubeconfig")); err != nil {
			f.t.Fatal(err)
		}
		f.members = append(f.members, mb)
	}
}

// uses says what each daemon asks of the apiserver, as far as its cost
// goes, and what the apiserver offers.
func (f *fleet) uses(ctx context.Context) []string {
	watchList := "off"
	if raw, err := f.scrape(ctx); err == nil && metricSum(raw, "kubernetes_feature_enabled", `name="WatchList"`) == 1 {
		watchList = "on"
	}
	return []string{
		"the apiserver (v1.37.2, lab defaults): its WatchList feature gate (streaming lists served from the watch cache) is " + watchList +
			" (`kubernetes_feature_enabled`); CBOR is alpha and off on both sides, so not measured",
		"kube-outpost: one informer each for Services and EndpointSlices (cluster-wide), with label selectors applied by the apiserver " +
			"(no `service.kubernetes.io/service-proxy-name`; Services also not headless); protobuf, which client-go's typed clients ask for " +
			"when no content type is set (kube-outpost sets none, and has no setting for it); " +
			"an informer transform that drops managedFields and annotations (its own memory only: the apiserver sends them all the same); " +
			"watch-list (client-go's `WatchListClient`, on by default in v0.37), measured on and off with `KUBE_FEATURE_WatchListClient`",
		"kube-proxy v1.37.2 at its defaults (`--kube-api-content-type` protobuf; informers of the same Services and EndpointSlices, " +
			"of its own Node and of ServiceCIDRs; watch-list as its feature gates' defaults have it), with `--hostname-override`, " +
			"`--nodeport-addresses primary`, `--conntrack-max-per-core 0`",
		"every daemon reaches the apiserver through a relay of its own (`lab.Cluster.RelayIn`), which counts the bytes each way",
	}
}

// scrape is the apiserver's /metrics.
func (f *fleet) scrape(ctx context.Context) (string, error) {
	raw, err := f.cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	return string(raw), err
}

// relayBytes is what the apiserver sent the first n members, and what
// they sent it.
func (f *fleet) relayBytes(n int) (toDaemons, toServer int64) {
	for _, mb := range f.members[:n] {
		in, out := mb.relay.Bytes()
		toDaemons += in
		toServer += out
	}
	return toDaemons, toServer
}
