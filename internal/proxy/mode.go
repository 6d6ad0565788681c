package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// Mode describes one datapath. A mode's package fills one in and calls
// Register from an init function; the daemon, check-config, prepare,
// cleanup, status and explain then find it by its name, so that adding a
// mode touches its own package, the one import line in
// internal/proxy/modes, and its docs.
type Mode struct {
	// Name is the value of the config key mode.
	Name config.Mode
	// Can lists what the mode does; check-config refuses a config that
	// asks for anything else, naming the key and the mode.
	Can config.Capabilities
	// Bounds are what the mode's kernel objects hold when they are sized
	// at load; check-config refuses limits past them, and mode = "auto"
	// passes the mode over for such a config.
	Bounds config.Bounds
	// Privileges are what the daemon's unit must grant for this mode.
	Privileges Privileges

	// New makes the backends for cfg: one per IP family the clusters use
	// (see Families) for a per-family datapath, or one for both. An error
	// that the host cannot run the mode should wrap ErrNotSupported.
	New func(env Env) ([]Backend, error)
	// BothFamilies says that New makes one backend for both IP
	// families, whatever Env.Families asks: a reload that adds the first
	// range of a family then makes no other, which would program the
	// same objects a second time.
	BothFamilies bool
	// Prepare does, with full privileges, what the sandboxed daemon may
	// not: load modules, set sysctls. The unit runs it as a privileged
	// ExecStartPre (kube-outpost prepare). nil: nothing to do.
	Prepare func(ctx context.Context, cfg *config.Config) error
	// InUse says whether objects of this mode exist on this host. It only
	// reads, and must not load a module to find out.
	InUse func(ctx context.Context) bool
	// Cleanup removes every object the mode ever programmed, in every
	// family, and nothing else. It needs no config: it also runs for the
	// mode a host was switched away from. A missing tool or module means
	// nothing of the mode is there.
	Cleanup func(ctx context.Context, log *slog.Logger) error
	// Auto is the mode's place among those mode = "auto" tries, lowest
	// first; 0 keeps auto from ever picking it.
	Auto int
	// Usable says whether this host can run the mode, for mode = "auto".
	// It must be cheap, change nothing that stays and load no module, and
	// give the same answer in the privileged prepare step as in the
	// sandboxed daemon, which resolve auto each on their own. nil: usable
	// wherever it is built.
	Usable func(ctx context.Context, cfg *config.Config) error
	// Explainer reads the kernel for `kube-outpost explain`. It is made
	// at the first explain, and must not touch the host before its first
	// ExplainPort: a daemon nobody asks should not pay for it.
	Explainer func(cfg *config.Config, log *slog.Logger) Explainer
}

// Privileges are what a mode needs from the systemd unit.
type Privileges struct {
	// Capabilities the daemon process needs, as systemd names them
	// (CapabilityBoundingSet, AmbientCapabilities).
	Capabilities []string
	// SystemCalls the daemon makes beyond systemd's @system-service set
	// (SystemCallFilter).
	SystemCalls []string
	// ReadWritePaths the daemon writes under the unit's read-only
	// ProtectSystem=strict view (ReadWritePaths, each optional: a path
	// missing on the host must not keep the unit from starting).
	ReadWritePaths []string
}

// Env is what a mode's constructor gets.
type Env struct {
	Config *config.Config
	// Families are the IP families to make backends for (false: IPv4,
	// true: IPv6): those of the clusters at start (Families), and one
	// more when a reload adds the first cluster range of a family.
	Families []bool
	Log      *slog.Logger
	// Resync asks the sync loop for a sync soon: for a mode with timers of
	// its own, such as ipvs's draining of removed real servers.
	Resync func()
}

// MasqueradeMark is the mark the backends set on connections to masquerade,
// 0 when masquerading is off.
func (e Env) MasqueradeMark() uint32 {
	if e.Config.Masquerade {
		return e.Config.MasqueradeMark
	}
	return 0
}

// Families lists the IP families a per-family datapath needs a backend
// for: a family gets one only when some cluster has service CIDRs in it,
// so an IPv4-only setup never needs ip6tables. (A local range or an
// external IP range is of a family the cluster has a service CIDR of.)
func Families(cfg *config.Config) (ipv6 []bool) {
	for _, v6 := range []bool{false, true} {
		if slices.ContainsFunc(cfg.Clusters, func(c config.Cluster) bool {
			return slices.ContainsFunc(c.ServiceCIDRs, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 })
		}) {
			ipv6 = append(ipv6, v6)
		}
	}
	return ipv6
}

// NotSupportedError says a configured mode cannot run on this host. The
// daemon refuses to start rather than fall back: a silently different
// datapath is worse than a clear error.
type NotSupportedError struct {
	Mode config.Mode
	Err  error
}

func (e *NotSupportedError) Error() string {
	return fmt.Sprintf("mode %q is not supported on this host: %v", e.Mode, e.Err)
}

func (e *NotSupportedError) Unwrap() error { return e.Err }

var (
	regMu sync.RWMutex
	modes []*Mode
)

// Register adds a mode. It panics on a second mode of the same name: that
// is a programming error found by any test.
func Register(m *Mode) {
	regMu.Lock()
	defer regMu.Unlock()
	if slices.ContainsFunc(modes, func(o *Mode) bool { return o.Name == m.Name }) {
		panic(fmt.Sprintf("proxy: mode %q registered twice", m.Name))
	}
	if m.New == nil || m.InUse == nil || m.Cleanup == nil || m.Explainer == nil {
		panic(fmt.Sprintf("proxy: mode %q lacks New, InUse, Cleanup or Explainer", m.Name))
	}
	modes = append(modes, m)
	config.RegisterMode(m.Name, m.Can, m.Bounds)
}

// Lookup returns the mode named name, nil when none is registered.
func Lookup(name config.Mode) *Mode {
	regMu.RLock()
	defer regMu.RUnlock()
	for _, m := range modes {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Modes returns every registered mode, in the order registered.
func Modes() []*Mode {
	regMu.RLock()
	defer regMu.RUnlock()
	return slices.Clone(modes)
}
