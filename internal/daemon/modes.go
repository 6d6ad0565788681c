// What the daemon does with datapath modes, all through the registry in
// internal/proxy: it never names a mode.

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/modes" // every mode this binary has
	"github.com/kube-outpost/kube-outpost/internal/resolved"
	"github.com/kube-outpost/kube-outpost/internal/routes"
)

// chooseMode finds the mode to run: the configured one, or the one mode =
// "auto" picks on this host now, said once in the log (and in status).
func (d *Daemon) chooseMode() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, why, err := proxy.Resolve(ctx, d.cfg)
	if err != nil {
		return err
	}
	d.mode = m
	if d.cfg.Mode == config.ModeAuto {
		d.modeWhy = why
		d.log.Info("mode chosen", "mode", m.Name, "why", why)
	}
	return nil
}

// modeName is the mode in use, for status, metrics and the log.
func (d *Daemon) modeName() string {
	if d.mode == nil {
		return string(d.cfg.Mode)
	}
	return string(d.mode.Name)
}

func (d *Daemon) newBackends(families []bool) ([]proxy.Backend, error) {
	return d.mode.New(proxy.Env{Config: d.cfg, Families: families, Log: d.log, Resync: d.queue})
}

// addFamilies makes the backends of the IP families cfg has and the
// running daemon has none for: a reload that adds the first IPv6 service
// range; none for a mode whose backends serve both families. The settings
// outside [[clusters]] stay those of the start.
func (d *Daemon) addFamilies(cfg *config.Config) error {
	if d.fixedBackends {
		return nil
	}
	d.backendsMu.Lock()
	defer d.backendsMu.Unlock()
	var added []bool
	for _, v6 := range proxy.Families(cfg) {
		if !slices.Contains(d.families, v6) {
			added = append(added, v6)
		}
	}
	if len(added) == 0 {
		return nil
	}
	if d.mode != nil && d.mode.BothFamilies {
		d.families = append(d.families, added...)
		d.log.Info("a new IP family, which the running backends serve already", "ipv6", added)
		return nil
	}
	bs, err := d.newBackends(added)
	if err != nil {
		return err
	}
	d.backends = append(d.backends, bs...)
	d.families = append(d.families, added...)
	d.log.Info("backends added for a new IP family", "ipv6", added)
	return nil
}

// backendList is the backends now; a reload may add to them.
func (d *Daemon) backendList() []proxy.Backend {
	d.backendsMu.RLock()
	defer d.backendsMu.RUnlock()
	return slices.Clone(d.backends)
}

// Prepare does, with full privileges, what the mode needs before the
// sandboxed daemon starts (see the unit's privileged ExecStartPre). For
// mode = "auto" it makes the choice the daemon will make: every mode's
// Usable gives the same answer here as in the sandbox.
func Prepare(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	m, why, err := proxy.Resolve(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.Mode == config.ModeAuto {
		log.Info("mode chosen", "mode", m.Name, "why", why)
	}
	if cfg.DNS.Enabled() && cfg.DNS.Resolved == config.ResolvedAuto {
		// Not fatal: the daemon loads it at the link's creation
		// anyway, with a stray dummy0.
		if err := resolved.Prepare(ctx); err != nil {
			log.Warn("could not load the dummy module for the systemd-resolved registration's link", "err", err)
		}
	}
	if m.Prepare == nil {
		return nil
	}
	return m.Prepare(ctx, cfg)
}

// otherModeCleanup removes what other modes left when the mode was
// switched: their rules would otherwise compete with ours (iptables DNAT in
// nat OUTPUT comes before IPVS). It runs once the new mode is ready, with
// every cluster synced (or past the grace for unreachable ones): make
// before break, so that the old mode's rules serve until the new ones do.
// It only acts on a mode whose objects exist, so a normal restart never
// removes anything.
func (d *Daemon) otherModeCleanup(ctx context.Context) {
	for _, m := range proxy.Modes() {
		if m == d.mode || !m.InUse(ctx) {
			continue
		}
		d.log.Info("removing what another mode left (mode switched)", "mode", m.Name, "now", d.modeName())
		if err := m.Cleanup(ctx, d.log); err != nil {
			d.log.Warn("could not remove everything another mode left", "mode", m.Name, "err", err)
		}
	}
}

// Cleanup removes everything any kube-outpost mode ever programmed on this
// host, the routes of reach = "routes" and the registration with
// systemd-resolved. Each removes only its own objects, so the order does
// not matter.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	var errs []error
	for _, m := range proxy.Modes() {
		if err := m.Cleanup(ctx, log); err != nil {
			errs = append(errs, fmt.Errorf("mode %s: %w", m.Name, err))
		}
	}
	if err := routes.New(routes.Options{Kernel: routes.NewKernel(nil), Log: log}).Cleanup(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := cleanupResolved(ctx, dialResolved, resolved.Kernel{}, log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
