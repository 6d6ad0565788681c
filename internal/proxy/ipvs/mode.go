package ipvs

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// ModeName is this datapath's value of the config key mode.
const ModeName config.Mode = "ipvs"

func init() {
	// This mode's chains and hooks go in an order only its own cleanup
	// knows (ipsets can go only once no rule names them).
	iptables.ReserveChains(chainPrefix)
	proxy.Register(&proxy.Mode{
		Name: ModeName,
		Can: config.Capabilities{config.CanRoutedClients, config.CanNodePorts, config.CanExternalIPs,
			config.CanMasquerade, config.CanIPv6, config.CanReject, config.CanAffinity, config.CanSyncByCommand},
		// Netlink to IPVS and iptables-restore need CAP_NET_ADMIN;
		// CAP_NET_RAW is what xtables asks for. Loading ip_vs needs
		// CAP_SYS_MODULE, which only Prepare, in the privileged
		// ExecStartPre, has.
		Privileges: proxy.Privileges{Capabilities: []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}},
		New:        newBackends,
		Prepare: func(ctx context.Context, cfg *config.Config) error {
			// This mode writes iptables rules too (see iptables.EnsureLockFile).
			if err := iptables.EnsureLockFile(iptables.LockFile()); err != nil {
				return err
			}
			return Prepare(ctx, NewKernel(), cfg.IPVSScheduler)
		},
		InUse:     inUse,
		Cleanup:   cleanupAll,
		Explainer: newExplainer,
		// Last: few hosts load ip_vs, and the other modes need no module.
		Auto:   30,
		Usable: usable,
	})
}

// usable says whether this host can run ipvs mode: ip_vs is loaded or can
// be (modprobe's dry run: auto must load nothing), ipset is there, and so
// is iptables for the few rules this mode writes.
func usable(ctx context.Context, cfg *config.Config) error {
	if err := moduleLoadable(ctx); err != nil {
		return err
	}
	if _, err := NewIPSet(); err != nil {
		return err
	}
	return iptables.Usable(ctx, cfg)
}

func newBackends(env proxy.Env) ([]proxy.Backend, error) {
	k := NewKernel()
	if err := k.EnsureModule(context.Background()); err != nil {
		return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	ips, err := NewIPSet()
	if err != nil {
		return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	var out []proxy.Backend
	for _, v6 := range env.Families {
		r, err := iptables.NewRunner(v6)
		if err != nil {
			return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
		}
		out = append(out, New(Options{
			Kernel: k, IPTables: r, IPSet: ips, IPv6: v6, Scheduler: env.Config.IPVSScheduler,
			MasqueradeMark: env.MasqueradeMark(), RoutedClients: env.Config.RoutedClients, Log: env.Log, Resync: env.Resync,
		}))
	}
	return out, nil
}

// inUse: outpost0 exists only while this mode has ClusterIPs bound.
func inUse(context.Context) bool {
	_, err := net.InterfaceByName(Interface)
	return err == nil
}

// cleanupAll removes the virtual servers, outpost0, ipsets and chains of
// this mode, for both families. It never loads ip_vs: without it, there is
// nothing of ours in IPVS.
func cleanupAll(ctx context.Context, log *slog.Logger) error {
	ips, err := NewIPSet()
	if err != nil {
		ips = nil // no ipset tool: no sets of ours
	}
	k := NewKernel()
	var errs []error
	for _, v6 := range []bool{false, true} {
		r, err := iptables.NewRunner(v6)
		if err != nil {
			continue
		}
		errs = append(errs, New(Options{Kernel: k, IPTables: r, IPSet: ips, IPv6: v6, Log: log}).Cleanup(ctx))
	}
	return errors.Join(errs...)
}
