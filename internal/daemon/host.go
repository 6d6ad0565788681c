package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
)

// hostSource is this host's network as the kernel has it. outpost0 holds
// ipvs mode's VIPs, which are not the host's own addresses.
var hostSource hostcheck.Source = hostcheck.Netlink{IgnoreLinks: []string{ipvs.Interface}}

// hostAddrPoll is how often the host's addresses are read again even
// without a change notification: a missed notification (the socket's
// buffer overflowed) must not keep an old address set for long.
const hostAddrPoll = 30 * time.Second

// CheckHost refuses clusters whose local_service_cidr collides with this
// host's addresses or connected routes, every collision at once.
func CheckHost(cfg *config.Config) error {
	return checkHost(cfg.Clusters, hostSource)
}

func checkHost(clusters []config.Cluster, src hostcheck.Source) error {
	collisions, err := hostcheck.Check(clusters, src)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range collisions {
		errs = append(errs, c)
	}
	return errors.Join(errs...)
}

// refreshHostAddrs hands the model this host's addresses, which no
// endpoint and no external IP may be.
func (d *Daemon) refreshHostAddrs() {
	addrs, err := d.host.Addrs()
	if err != nil {
		d.log.Warn("could not read this host's addresses; endpoints at them are not recognised until the next try", "err", err)
		return
	}
	ips := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		ips = append(ips, a.IP)
	}
	d.store.SetHostAddrs(ips)
}

// watchHostAddrs keeps the model's host addresses current: at every
// address change the kernel reports, and every hostAddrPoll.
func (d *Daemon) watchHostAddrs(ctx context.Context) {
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if _, real := d.host.(hostcheck.Netlink); real {
		if err := netlink.AddrSubscribe(updates, done); err != nil {
			d.log.Warn("cannot subscribe to address changes; reading them every "+hostAddrPoll.String(), "err", err)
		}
	}
	t := time.NewTicker(hostAddrPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-updates:
			if !ok {
				updates = nil // subscription ended; the ticker goes on
				continue
			}
			// Read the whole list, not the update: a burst of updates
			// then costs one read each, and nothing is applied twice.
			d.refreshHostAddrs()
		case <-t.C:
			d.refreshHostAddrs()
		}
	}
}

// hostProblem wraps collisions for setClusters' callers.
func hostProblem(err error) error {
	return fmt.Errorf("local_service_cidr collides with this host's network:\n%w", err)
}
