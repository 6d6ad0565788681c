package nftables

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"slices"

	gnft "github.com/google/nftables"
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
			config.CanMasquerade, config.CanIPv6, config.CanReject, config.CanAffinity, config.CanCountConnections, config.CanSyncByCommand},
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

// inUse: a table of ours exists in either family.
func inUse(context.Context) bool {
	fams, err := ourFamilies()
	return err == nil && len(fams) > 0
}

// ourFamilies are the families that hold a table of ours, asked over
// netlink for the tables alone: `nft list tables` fetches every table's
// contents first, and took 4.4 s beside 120,000 rules of iptables-nft,
// which an iptables-mode daemon waited for before it said ready. An
// error means no nf_tables here: nothing of ours either.
func ourFamilies() ([]knftables.Family, error) {
	c, err := gnft.New()
	if err != nil {
		return nil, err
	}
	var out []knftables.Family
	for _, f := range []struct {
		nl  gnft.TableFamily
		nft knftables.Family
	}{{gnft.TableFamilyIPv4, familyV4.nft}, {gnft.TableFamilyIPv6, familyV6.nft}} {
		tables, err := c.ListTablesOfFamily(f.nl)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(tables, func(t *gnft.Table) bool { return t.Name == TableName }) {
			out = append(out, f.nft)
		}
	}
	return out, nil
}

// cleanupAll deletes the tables of ours in both families. A host without
// nft has none.
func cleanupAll(ctx context.Context, log *slog.Logger) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil
	}
	fams, err := ourFamilies()
	if err != nil {
		log.Debug("listing nf_tables tables failed; no nftables table of ours to remove", "err", err)
		return nil
	}
	var errs []error
	for _, fam := range fams {
		nft, err := knftables.New(fam, TableName)
		if err == nil {
			err = deleteTable(ctx, nft)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
