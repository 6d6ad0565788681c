//go:build bench

package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/internal/proxy/kernelbench"
)

// The bytes the apiserver sends each daemon are counted by the daemon's
// relay (lab.Cluster.RelayIn), not read from the apiserver's
// apiserver_watch_events_sizes: the relay sees every byte of the
// daemon's connections as it left the apiserver's socket, i.e. the
// initial lists (LIST pages or a watch-list stream), the watch events,
// bookmarks, HTTP/2 frames and pings, TLS records, and whatever the
// apiserver gzipped (lists and, with WatchListCompression, watch-list
// streams); and it counts each daemon apart. The metric sums every
// watcher's events of a resource together, before compression, framing
// and TLS, and leaves out lists and every other request (kube-proxy's
// Node watch, its Events). It is read too, beside the relay's count, as
// what of a change is the event itself. The relay's own hop adds no
// byte: it copies the TCP payload both ways and terminates nothing. The
// IP and TCP headers (about 52 bytes a segment) are not counted.

// run measures one row: n daemons of variant (none for the baseline).
func (f *fleet) run(ctx context.Context, variant string, n int) (r FleetRow) {
	r = FleetRow{Variant: variant, N: n}
	fmt.Fprintf(os.Stderr, ">> %s, N=%d: restarting the apiserver, then %s to settle\n", variant, n, f.p.Settle)
	// A fresh apiserver for every row: its Go heap keeps what an earlier,
	// larger fleet made it take, so RSS at rest would depend on the
	// order of the rows.
	if err := f.c.StopAPIServer(); err != nil {
		r.Err = "restarting the apiserver: " + err.Error()
		return r
	}
	if err := f.c.StartAPIServer(ctx); err != nil {
		r.Err = "restarting the apiserver: " + err.Error()
		return r
	}
	pid := f.c.APIServerPid()
	rss := func() float64 { v, _ := kernelbench.ProcStatusMiB(strconv.Itoa(pid), "VmRSS"); return v }
	// The RSS of the settled apiserver, before any daemon: a restarted
	// apiserver's differs from the last one's by more than a few
	// daemons take, so each row's RSS at rest is read against its own.
	time.Sleep(f.p.Settle / 2)
	r.SettledRSS = medianOver(f.p.Settle-f.p.Settle/2, rss)

	// Scrapes cost the apiserver CPU too: each is taken outside the
	// windows its CPU time is read over.
	m0, err := f.scrape(ctx)
	if err != nil {
		r.Err = "metrics: " + err.Error()
		return r
	}
	cpu0 := cpuSeconds(pid)
	bytes0, toServer0 := f.relayBytes(n)
	start := time.Now()
	procs, err := f.startFleet(ctx, variant, n)
	defer func() {
		for i, p := range procs {
			if i == 0 {
				r.log = p.Log()
			}
			p.stop()
		}
	}()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	stopPeak := make(chan struct{})
	peak := make(chan float64)
	go func() {
		top := rss()
		every(250*time.Millisecond, stopPeak, func() { top = max(top, rss()) })
		peak <- top
	}()
	err = f.waitSynced(ctx, procs, start.Add(f.p.SyncTimeout))
	close(stopPeak)
	r.SyncPeakRSS = <-peak
	if err != nil {
		r.SyncTimedOut = errors.Is(err, errTimeout)
		r.Err = fmt.Sprintf("sync: %v", err)
		return r
	}
	if n > 0 {
		r.Sync = time.Since(start)
	}
	r.SyncCPU = cpuSeconds(pid) - cpu0
	bytes1, _ := f.relayBytes(n)
	r.SyncBytes = bytes1 - bytes0
	m1, err := f.scrape(ctx)
	if err != nil {
		r.Err = "metrics: " + err.Error()
		return r
	}
	r.WatchLists, r.Lists = initialLists(m1)
	w0, l0 := initialLists(m0)
	r.WatchLists -= w0
	r.Lists -= l0

	// At rest.
	cpu1 := cpuSeconds(pid)
	bytes1, _ = f.relayBytes(n)
	restStart := time.Now()
	r.RestRSS = medianOver(f.p.Rest, rss)
	r.RestCPU = cpuSeconds(pid) - cpu1
	r.Rest = time.Since(restStart)
	bytes2, _ := f.relayBytes(n)
	r.RestBytes = bytes2 - bytes1

	// Changes.
	m2, err := f.scrape(ctx)
	if err != nil {
		r.Err = "metrics: " + err.Error()
		return r
	}
	cpu2 := cpuSeconds(pid)
	bytes2, _ = f.relayBytes(n)
	changesStart := time.Now()
	last, made, err := f.change(ctx)
	r.Changes = made
	if err != nil {
		r.Err = "change: " + err.Error()
	}
	if made > 0 {
		r.ChangesLate = f.waitSeen(ctx, procs, last, time.Now().Add(f.p.SyncTimeout))
	}
	r.ChangesWindow = time.Since(changesStart)
	r.ChangesCPU = cpuSeconds(pid) - cpu2
	bytes3, toServer3 := f.relayBytes(n)
	r.ChangesBytes = bytes3 - bytes2
	r.ToServer = toServer3 - toServer0
	if m3, err := f.scrape(ctx); err == nil {
		r.ChangeEvents = metricSum(m3, "apiserver_watch_events_total", `resource="endpointslices"`) -
			metricSum(m2, "apiserver_watch_events_total", `resource="endpointslices"`)
		r.ChangeEventBytes = metricSum(m3, "apiserver_watch_events_sizes_sum", `resource="endpointslices"`) -
			metricSum(m2, "apiserver_watch_events_sizes_sum", `resource="endpointslices"`)
	}
	return r
}

// medianOver is the median of f sampled every second for d (f once if d
// is shorter).
func medianOver(d time.Duration, f func() float64) float64 {
	samples := []float64{f()}
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	every(time.Second, stop, func() { samples = append(samples, f()) })
	slices.Sort(samples)
	return samples[len(samples)/2]
}

// initialLists are, from the apiserver's metrics, the watch-list streams
// of Services and EndpointSlices it finished, and their LIST requests.
func initialLists(scrape string) (watchLists, lists float64) {
	for _, res := range []string{`resource="services"`, `resource="endpointslices"`} {
		watchLists += metricSum(scrape, "apiserver_watch_list_duration_seconds_count", res)
		lists += metricSum(scrape, "apiserver_request_total", `verb="LIST"`, res)
	}
	return watchLists, lists
}

// startFleet starts variant's daemon on the first n members.
func (f *fleet) startFleet(ctx context.Context, variant string, n int) ([]*proc, error) {
	f.rows++
	var procs []*proc
	for _, mb := range f.members[:n] {
		p, err := f.startMember(ctx, variant, mb)
		if err != nil {
			return procs, fmt.Errorf("%s on %s: %w", variant, mb.node.Name, err)
		}
		procs = append(procs, p)
	}
	return procs, nil
}

func (f *fleet) startMember(ctx context.Context, variant string, mb *member) (*proc, error) {
	n := mb.node
	started := time.Now()
	env := f.env(f.m)
	if variant == fleetKubeProxy {
		o, err := n.StartDaemon("kube-proxy", env, f.kproxy, "--kubeconfig="+mb.proxyKC, "--hostname-override="+n.Name,
			"--proxy-mode="+f.m.proxyMode, "--nodeport-addresses=primary", "--conntrack-max-per-core=0", "--v=1")
		if err != nil {
			return nil, err
		}
		return &proc{Outpost: o, node: n, m: f.m, started: started}, nil
	}
	// A state directory of the row's own: a daemon that found an earlier
	// row's state would program it at once, before it listed anything.
	dir := filepath.Join(f.l.Dir, n.Name, fmt.Sprintf("row%d", f.rows))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("mode = %q\nstatus_socket = %q\nstate_dir = %q\n\n[[clusters]]\nname = %q\nkubeconfig = %q\nservice_cidrs = [%q]\n",
		f.m.proxyMode, filepath.Join(dir, "status.sock"), filepath.Join(dir, "state"), f.c.Name, mb.outpostKC, f.c.ServiceCIDR)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	// Set either way, so that the row measures what it says whatever
	// the environment holds.
	watchList := "true"
	if variant == fleetOutpostNoWatchList {
		watchList = "false"
	}
	env = append(env, "KUBE_FEATURE_WatchListClient="+watchList)
	o, err := n.StartOutpost(ctx, env, f.outpost, cfg)
	if err != nil {
		return nil, err
	}
	return &proc{Outpost: o, node: n, m: f.m, started: started}, nil
}

// waitSynced waits until every daemon's rules hold every ClusterIP of the
// load, polling each one not there yet about once a second.
func (f *fleet) waitSynced(ctx context.Context, procs []*proc, deadline time.Time) error {
	left := slices.Clone(procs)
	for len(left) > 0 {
		if time.Now().After(deadline) {
			return errTimeout
		}
		var still []*proc
		for _, p := range left {
			if exited, err := p.Exited(); exited {
				return fmt.Errorf("%s exited: %v\n%s", p.node.Name, err, tail(p.Log()))
			}
			if n, err := f.programmed(ctx, p, f.want); err != nil || n < len(f.want) {
				still = append(still, p)
			}
		}
		if left = still; len(left) > 0 {
			time.Sleep(time.Second)
		}
	}
	return nil
}

// change makes the changes, ChangeEvery apart: each moves one endpoint of
// a service of the load to an address never used before. It returns the
// last address written and the count of changes made.
func (f *fleet) change(ctx context.Context) (string, int, error) {
	var last string
	next := time.Now()
	for i := range f.p.Changes {
		time.Sleep(time.Until(next))
		next = next.Add(f.p.ChangeEvery)
		s := f.bulk[i%len(f.bulk)]
		sl := s.slice.DeepCopy()
		addr := nthAddr(churnNet, int(f.churnSeq.Add(1))).String()
		sl.Endpoints[0].Addresses = []string{addr}
		got, err := f.cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, sl, metav1.UpdateOptions{})
		if err != nil {
			return last, i, err
		}
		s.slice, last = got, addr
	}
	return last, f.p.Changes, nil
}

// waitSeen waits until every daemon's rules hold addr, the last change's
// endpoint: a daemon's watch delivers the events in order, so it has
// received every change by then. It returns how many had not by the
// deadline.
func (f *fleet) waitSeen(ctx context.Context, procs []*proc, addr string, deadline time.Time) int {
	re := regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(addr) + `([^0-9]|$)`)
	left := slices.Clone(procs)
	for len(left) > 0 && time.Now().Before(deadline) {
		var still []*proc
		for _, p := range left {
			seen := false
			_ = f.scanRules(ctx, p, func(line []byte) { seen = seen || re.Match(line) })
			if !seen {
				still = append(still, p)
			}
		}
		if left = still; len(left) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return len(left)
}
