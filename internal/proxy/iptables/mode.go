package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// ModeName is this datapath's value of the config key mode.
const ModeName config.Mode = "iptables"

func init() {
	proxy.Register(&proxy.Mode{
		Name: ModeName,
		Can: config.Capabilities{config.CanRoutedClients, config.CanNodePorts, config.CanExternalIPs,
			config.CanMasquerade, config.CanIPv6, config.CanReject, config.CanAffinity, config.CanSyncByCommand},
		// iptables-restore needs CAP_NET_ADMIN; CAP_NET_RAW is what
		// xtables asks for to open its raw socket.
		Privileges: proxy.Privileges{Capabilities: []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}},
		New:        newBackends,
		// The kernel loads what the rules use by itself; the sandbox
		// needs the lock file there before it is made.
		Prepare:   func(context.Context, *config.Config) error { return EnsureLockFile(LockFile()) },
		InUse:     inUse,
		Cleanup:   cleanupAll,
		Explainer: newExplainer,
		// After nftables, whose dispatch does not grow with the number
		// of services; before ipvs, which needs a module few hosts load.
		Auto:   20,
		Usable: Usable,
	})
}

// Usable says whether this host runs iptables for every family cfg needs:
// the tools are there, and the kernel lists nat OUTPUT. It only reads.
func Usable(ctx context.Context, cfg *config.Config) error {
	if _, err := VariantInUse(); err != nil {
		return err
	}
	for _, v6 := range proxy.Families(cfg) {
		r, err := NewRunner(v6)
		if err == nil {
			_, err = r.ListChain(ctx, "nat", "OUTPUT")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", familyName(v6), err)
		}
	}
	return nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func newBackends(env proxy.Env) ([]proxy.Backend, error) {
	v, err := VariantInUse()
	if err != nil {
		return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	env.Log.Info("iptables in use", "variant", v)
	ct := NewConntrack()
	var out []proxy.Backend
	for _, v6 := range env.Families {
		r, err := NewRunner(v6)
		if err != nil {
			return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
		}
		out = append(out, New(Options{Runner: r, IPv6: v6, MasqueradeMark: env.MasqueradeMark(), Conntrack: ct,
			RoutedClients: env.Config.RoutedClients, Log: env.Log}))
	}
	return out, nil
}

// inUse: the service dispatch chain exists in either family's nat table.
func inUse(ctx context.Context) bool {
	for _, v6 := range []bool{false, true} {
		if r, err := NewRunner(v6); err == nil && ModeInUse(ctx, r) {
			return true
		}
	}
	return false
}

// cleanupAll removes this mode's chains and hooks in both families. A
// family without iptables tools or kernel support has none.
func cleanupAll(ctx context.Context, log *slog.Logger) error {
	var errs []error
	for _, v6 := range []bool{false, true} {
		save := "iptables-save"
		if v6 {
			save = "ip6tables-save"
		}
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		r, err := NewRunner(v6)
		if err != nil {
			if !v6 { // else: no IPv6 netfilter in this kernel, nothing of ours there
				errs = append(errs, err)
			}
			continue
		}
		errs = append(errs, New(Options{Runner: r, IPv6: v6, Log: log}).Cleanup(ctx))
	}
	return errors.Join(errs...)
}
