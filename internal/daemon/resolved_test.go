package daemon

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/resolved"
)

// resolvedWorld is the component against a fake resolved and fake links,
// with clusters a test may change as a reload would.
type resolvedWorld struct {
	reg   *resolvedReg
	bus   *resolved.FakeBus
	links *resolved.FakeLinks
	log   *logBuffer
	dials int

	mu       sync.Mutex
	clusters []config.Cluster
}

func newResolvedWorld(t *testing.T, cfg config.DNS) *resolvedWorld {
	t.Helper()
	w := &resolvedWorld{bus: resolved.NewFakeBus(), links: resolved.NewFakeLinks(), log: &logBuffer{},
		clusters: []config.Cluster{{Name: "prod", DNSZone: "prod.internal", DNSDefault: true, ServiceCIDRs: []netip.Prefix{alphaCIDR}}}}
	w.reg = newResolvedReg(cfg, func() []config.Cluster {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Clone(w.clusters)
	}, slog.New(slog.NewTextHandler(w.log, nil)))
	w.reg.dial = func() (resolved.Bus, error) { w.dials++; return w.bus, nil }
	w.reg.links = w.links
	w.reg.every = 20 * time.Millisecond
	return w
}

var dnsAuto = config.DNS{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.153:53"), netip.MustParseAddrPort("10.0.0.5:53")},
	TTL: 5 * time.Second, Resolved: config.ResolvedAuto}

// held waits until resolved holds domains for our link, and returns its
// registration.
func (w *resolvedWorld) held(t *testing.T, domains ...string) resolved.Want {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		i, ok, _ := w.links.Index(resolved.LinkName)
		got, held := w.bus.Links()[i]
		if ok && held && slices.Equal(got.Domains, domains) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("resolved holds %v for link %d (exists %v), want domains %v\nlog:\n%s", w.bus.Links(), i, ok, domains, w.log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *resolvedWorld) waitStatus(t *testing.T, cond func(registered bool, problem string) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := w.reg.status()
		if cond(st.Registered, st.Problem) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v\nlog:\n%s", st, w.log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestResolvedRegistration: registered at the start for the zones only,
// with the 127.x server alone on our link; again when resolved restarts
// and forgets, when it comes back after a stop, and when a reload
// changes the zones; kept when the daemon stops. One log line per change.
func TestResolvedRegistration(t *testing.T) {
	w := newResolvedWorld(t, dnsAuto)
	if err := w.reg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	zones := []string{"96.10.in-addr.arpa", "cluster.local", "prod.internal"}
	got := w.held(t, zones...)
	if want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.153:53")}; !slices.Equal(got.Servers, want) || got.DefaultRoute {
		t.Errorf("registered %+v, want servers %v without DefaultRoute", got, want)
	}
	if a := w.links.Addrs(resolved.LinkName); !slices.Equal(a, []netip.Addr{netip.MustParseAddr("127.0.0.153")}) {
		t.Errorf("link addresses %v", a)
	}
	w.waitStatus(t, func(r bool, _ string) bool { return r })

	// Checks that find it held change nothing and say nothing.
	time.Sleep(100 * time.Millisecond)
	if n := strings.Count(w.log.String(), "registered with systemd-resolved"); n != 1 {
		t.Errorf("%d log lines of registration for one registration:\n%s", n, w.log)
	}

	w.bus.Restart()
	w.held(t, zones...)
	// A restart that keeps the links, as resolved does: nothing to
	// register, and the log says the registration holds again.
	w.bus.Stop()
	w.waitStatus(t, func(r bool, _ string) bool { return !r })
	w.bus.Start()
	w.waitStatus(t, func(r bool, _ string) bool { return r })
	if !strings.Contains(w.log.String(), "holds the registration again") {
		t.Errorf("no log line for the registration held again:\n%s", w.log)
	}
	w.bus.SetRunning(false)
	w.waitStatus(t, func(r bool, p string) bool { return !r && strings.Contains(p, "not running") })
	w.bus.SetRunning(true)
	w.held(t, zones...)
	w.waitStatus(t, func(r bool, _ string) bool { return r })

	w.mu.Lock()
	w.clusters = append(w.clusters, config.Cluster{Name: "beta", DNSZone: "beta.internal", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/16")}})
	w.mu.Unlock()
	if err := w.reg.Sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	w.held(t, "96.10.in-addr.arpa", "97.10.in-addr.arpa", "beta.internal", "cluster.local", "prod.internal")

	w.reg.Stop()
	if len(w.bus.Links()) != 1 {
		t.Errorf("after Stop resolved holds %v: the registration must stay across a restart", w.bus.Links())
	}
	if n := strings.Count(w.log.String(), "level=WARN msg=\"dns: not registered"); n != 2 {
		t.Errorf("%d warnings for two stops of resolved:\n%s", n, w.log)
	}
	if n := strings.Count(w.log.String(), "registered with systemd-resolved for"); n != 4 {
		t.Errorf("%d registrations logged, want 4 (start, restart, start after stop, reload):\n%s", n, w.log)
	}
}

// TestResolvedNoLoopback: a server on no 127.x address cannot be
// registered, and status says why; resolved is not touched.
func TestResolvedNoLoopback(t *testing.T) {
	cfg := dnsAuto
	cfg.Listen = []netip.AddrPort{netip.MustParseAddrPort("10.0.0.5:53")}
	w := newResolvedWorld(t, cfg)
	if err := w.reg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer w.reg.Stop()
	w.waitStatus(t, func(r bool, p string) bool { return !r && strings.Contains(p, "127.x.x.x") })
	if w.bus.Calls != 0 || w.links.Addrs(resolved.LinkName) != nil {
		t.Errorf("resolved called %d times, link %v", w.bus.Calls, w.links.Addrs(resolved.LinkName))
	}
}

// TestResolvedOtherNetns: a daemon in a network namespace other than
// resolved's makes no link and calls nothing: resolved would read our
// link's index as one of its own links.
func TestResolvedOtherNetns(t *testing.T) {
	w := newResolvedWorld(t, dnsAuto)
	w.reg.elsewhere = func() string { return "another network namespace" }
	if err := w.reg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer w.reg.Stop()
	w.waitStatus(t, func(r bool, p string) bool { return !r && p == "another network namespace" })
	if w.bus.Calls > 0 && len(w.bus.Links()) > 0 || w.links.Addrs(resolved.LinkName) != nil {
		t.Errorf("resolved holds %v, link %v", w.bus.Links(), w.links.Addrs(resolved.LinkName))
	}
}

// TestResolvedOff: with resolved = "off", or without [dns], the start
// removes what an earlier configuration registered, and when there is
// nothing, never reaches for the bus.
func TestResolvedOff(t *testing.T) {
	for _, cfg := range []config.DNS{{Listen: dnsAuto.Listen, Resolved: config.ResolvedOff}, {}} {
		w := newResolvedWorld(t, cfg)
		if err := w.reg.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		w.reg.Stop()
		if w.dials != 0 {
			t.Errorf("%+v: the bus was dialed without a registration to remove", cfg)
		}
		i, _ := w.links.Ensure(resolved.LinkName, nil)
		w.bus.SetLink(t.Context(), i, resolved.Want{Domains: []string{"prod.internal"}})
		if err := w.reg.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		w.reg.Stop()
		if _, ok, _ := w.links.Index(resolved.LinkName); ok || len(w.bus.Links()) != 0 {
			t.Errorf("%+v: the earlier registration stayed: %v", cfg, w.bus.Links())
		}
	}
}
