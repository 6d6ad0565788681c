// The registration with systemd-resolved ([dns] resolved = "auto"): a
// component that tells resolved to send the clusters' zones, and only
// them, to the DNS server, and keeps it told.

package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/names"
	"github.com/kube-outpost/kube-outpost/internal/resolved"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// resolvedCheckPeriod is how often the registration is read back: resolved
// says when it restarts (its bus name changes owner), but not when someone
// reverts our link or deletes it.
const resolvedCheckPeriod = 30 * time.Second

// resolvedReg keeps the registration. Its loop registers once the DNS
// server listens (the dns component starts first), again whenever
// resolved starts or the zones change, and after every check that finds
// it gone. Stop leaves it in place: during a restart of the daemon,
// resolved keeps sending the zones to the server's address, whose
// lookups fail over or are asked again, while every other name is
// untouched.
type resolvedReg struct {
	// wanted: [dns] with resolved = "auto". Otherwise Start removes a
	// registration an earlier configuration left, and nothing else.
	wanted   bool
	listen   []netip.AddrPort
	clusters func() []config.Cluster
	log      *slog.Logger
	// dial connects to resolved; nil when tests give fake backends and
	// no fake: the component then does nothing, on this host least of
	// all.
	dial  func() (resolved.Bus, error)
	links resolved.Links
	every time.Duration
	// elsewhere says why resolved must not be given our link ("" when
	// it may): resolved.HostNetns, or nothing in tests.
	elsewhere func() string

	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}

	mu    sync.Mutex
	state status.Resolved
	// registered is what resolved was last given.
	registered resolved.Want
}

var _ component = (*resolvedReg)(nil)

func newResolvedReg(cfg config.DNS, clusters func() []config.Cluster, log *slog.Logger) *resolvedReg {
	return &resolvedReg{wanted: cfg.Enabled() && cfg.Resolved == config.ResolvedAuto, listen: cfg.Listen,
		clusters: clusters, log: log, every: resolvedCheckPeriod, kick: make(chan struct{}, 1)}
}

// dialResolved is the real dial. Not resolved.Dial itself: its nil
// *DBus would be a Bus that is not nil.
func dialResolved() (resolved.Bus, error) {
	b, err := resolved.Dial()
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (r *resolvedReg) Start(ctx context.Context) error {
	if r.dial == nil {
		return nil
	}
	if !r.wanted {
		// Best effort: a host whose bus does not answer must still
		// start; `kube-outpost cleanup` says what it could not do.
		if err := cleanupResolved(ctx, r.dial, r.links, r.log); err != nil {
			r.log.Warn("could not remove the systemd-resolved registration an earlier configuration left", "err", err)
		}
		return nil
	}
	ctx, r.stop = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go r.loop(ctx)
	return nil
}

func (r *resolvedReg) Stop() {
	if r.stop != nil {
		r.stop()
		<-r.done
	}
}

// Sync asks the loop to register again when a reload changed the zones.
func (r *resolvedReg) Sync(context.Context, *model.State) error {
	if r.stop == nil {
		return nil
	}
	want := r.want()
	r.mu.Lock()
	same := want.Equal(r.registered)
	r.mu.Unlock()
	if !same {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// want is the registration of the configuration now: every cluster's
// zones and reverse zones, to the server's 127.x addresses.
func (r *resolvedReg) want() resolved.Want {
	w := resolved.Want{Servers: resolved.Servers(r.listen)}
	for _, c := range r.clusters() {
		w.Domains = append(w.Domains, names.ZonesOf([]config.Cluster{c})[c.Name]...)
		w.Domains = append(w.Domains, names.ReverseZonesOf(c)...)
	}
	slices.Sort(w.Domains)
	w.Domains = slices.Compact(w.Domains)
	return w
}

func (r *resolvedReg) loop(ctx context.Context) {
	defer close(r.done)
	var bus resolved.Bus
	defer func() {
		if bus != nil {
			bus.Close()
		}
	}()
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	for {
		var changed <-chan struct{}
		if bus == nil {
			b, err := r.dial()
			if err != nil {
				r.set(resolved.Want{}, "cannot reach the system bus: "+err.Error(), false)
			} else {
				bus = b
			}
		}
		if bus != nil {
			changed = bus.Changed()
			r.reconcile(ctx, bus)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-tick.C:
		case _, ok := <-changed:
			if !ok {
				// The bus went (dbus restarted): dial again.
				bus.Close()
				bus = nil
			}
		}
	}
}

// reconcile registers unless resolved holds the registration already.
func (r *resolvedReg) reconcile(ctx context.Context, bus resolved.Bus) {
	want := r.want()
	if len(want.Servers) == 0 {
		r.set(want, resolved.ErrNoServer.Error(), false)
		return
	}
	if r.elsewhere != nil {
		if why := r.elsewhere(); why != "" {
			r.set(want, why, false)
			return
		}
	}
	running, err := bus.Running(ctx)
	if err != nil {
		r.set(want, err.Error(), false)
		return
	}
	if !running {
		r.set(want, "systemd-resolved is not running; the server is registered when it starts", false)
		return
	}
	if ok, err := resolved.Holds(ctx, bus, r.links, want); err == nil && ok {
		r.set(want, "", false)
		return
	}
	if _, err := resolved.Register(ctx, bus, r.links, want); err != nil {
		r.set(want, err.Error(), false)
		return
	}
	r.set(want, "", true)
}

// set records the state, and logs it when it changed, or when resolved
// was given the registration (again): one line per change.
func (r *resolvedReg) set(want resolved.Want, problem string, registeredNow bool) {
	st := status.Resolved{Registered: problem == "", Link: resolved.LinkName, Problem: problem, CheckedAt: time.Now()}
	for _, s := range want.Servers {
		st.Servers = append(st.Servers, s.String())
	}
	st.Domains = want.Domains
	r.mu.Lock()
	before := r.state
	r.state = st
	if st.Registered {
		r.registered = want
	}
	r.mu.Unlock()
	switch {
	case registeredNow:
		r.log.Info("dns: registered with systemd-resolved for the zones only", "link", resolved.LinkName,
			"servers", st.Servers, "domains", "~"+strings.Join(want.Domains, " ~"))
	case st.Registered && !before.Registered && !before.CheckedAt.IsZero():
		// resolved kept it while it restarted.
		r.log.Info("dns: systemd-resolved holds the registration again", "link", resolved.LinkName)
	case !st.Registered && (before.Registered || before.Problem != st.Problem):
		r.log.Warn("dns: not registered with systemd-resolved", "problem", problem)
	}
}

func (r *resolvedReg) status() *status.Resolved {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state
	if st.Link == "" {
		st.Link, st.Problem = resolved.LinkName, "not checked yet"
	}
	return &st
}

// cleanupResolved ends a registration, if our link exists: resolved is
// asked to forget it only then, and only when the bus answers.
func cleanupResolved(ctx context.Context, dial func() (resolved.Bus, error), links resolved.Links, log *slog.Logger) error {
	if _, ok, err := links.Index(resolved.LinkName); err != nil || !ok {
		return err
	}
	var bus resolved.Bus
	var err error
	if why := resolved.HostNetns(); why != "" {
		err = errors.New(why)
	} else {
		bus, err = dial()
	}
	if err != nil {
		// Deleting the link ends the registration all the same.
		log.Info("systemd-resolved not reachable; removing the link alone", "link", resolved.LinkName, "err", err)
		bus = nil
	} else {
		defer bus.Close()
	}
	if err := resolved.Cleanup(ctx, bus, links); err != nil {
		return err
	}
	log.Info("dns: systemd-resolved registration removed", "link", resolved.LinkName)
	return nil
}
