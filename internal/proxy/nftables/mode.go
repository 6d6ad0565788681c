package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// ModeName is this datapath's value of the config key mode.
const ModeName config.Mode = "nftables"

func init() {
	proxy.Register(&proxy.Mode{
		Name: ModeName,
		Can: config.Capabilities{config.CanRoutedClients, config.CanNodePorts, config.CanExternalIPs,
			config.CanMasquerade, config.CanIPv6, config.CanReject, config.CanAffinity, config.CanCountConnections},
		// nft and conntrack's netlink need CAP_NET_ADMIN and nothing else.
		Privileges: proxy.Privileges{Capabilities: []string{"CAP_NET_ADMIN"}},
		New:        newBackends,
		// With full privileges the kernel loads every module the rules
		// use (nf_tables expressions, NAT, reject) while the probe
		// builds its throw-away table; the sandboxed daemon then finds
		// them loaded.
		Prepare:   func(ctx context.Context, _ *config.Config) error { return Usable(ctx) },
		InUse:     inUse,
		Cleanup:   cleanupAll,
		Explainer: newExplainer,
		// First for mode = "auto": its dispatch costs the same at 10 and
		// at 10,000 services (iptables mode's five times more), and at
		// 10,000 services its first full sync and a change take less
		// than iptables mode's (docs/datapaths.md, "mode = auto").
		Auto:   15,
		Usable: func(ctx context.Context, _ *config.Config) error { return Usable(ctx) },
	})
}

func newBackends(env proxy.Env) ([]proxy.Backend, error) {
	ct := iptables.NewConntrack()
	// One netlink socket serves both families' tables.
	w := &NetlinkWriter{}
	var out []proxy.Backend
	for _, v6 := range env.Families {
		nft, err := knftables.New(familyOf(v6).nft, TableName)
		if err != nil {
			return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
		}
		out = append(out, New(Options{NFT: nft, Rules: w, IPv6: v6, MasqueradeMark: env.MasqueradeMark(), Conntrack: ct,
			RoutedClients: env.Config.RoutedClients, Log: env.Log}))
	}
	return out, nil
}

// inUse: a table of ours exists in either family. `nft list tables` names
// the tables only, whatever their size.
func inUse(ctx context.Context) bool {
	out, err := exec.CommandContext(ctx, "nft", "list", "tables").Output()
	if err != nil {
		return false
	}
	return len(ourTables(string(out))) > 0
}

// ourTables are the families whose table of ours `nft list tables` names.
func ourTables(listing string) []knftables.Family {
	var out []knftables.Family
	for _, l := range strings.Split(listing, "\n") {
		for _, f := range []family{familyV4, familyV6} {
			if strings.TrimSpace(l) == fmt.Sprintf("table %s %s", f.nft, TableName) {
				out = append(out, f.nft)
			}
		}
	}
	return out
}

// cleanupAll deletes the tables of ours in both families. A host without
// nft has none.
func cleanupAll(ctx context.Context, log *slog.Logger) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "nft", "list", "tables").Output()
	if err != nil {
		// No nf_tables in this kernel: nothing of ours either.
		log.Debug("nft list tables failed; no nftables table of ours to remove", "err", err)
		return nil
	}
	var errs []error
	for _, fam := range ourTables(string(out)) {
		nft, err := knftables.New(fam, TableName)
		if err == nil {
			err = deleteTable(ctx, nft)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
