package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/hostcheck"
	"github.com/kube-outpost/kube-outpost/internal/model"
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

// refreshHostAddrs hands the model this host's addresses and default
// gateways, which no endpoint, VIP or external IP may be. The model
// builds everything again only when they changed.
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
	routes, err := d.host.Routes()
	if err != nil {
		d.log.Warn("could not read this host's routes; its default gateways stay those read last", "err", err)
		d.store.SetHostAddrs(ips)
		return
	}
	d.store.SetHostFacts(model.HostFacts{Addrs: ips, Gateways: hostcheck.Gateways(routes)})
}

// apiserverLookupTimeout bounds the resolution of the apiservers' host
// names at start and at each reload, all of them at once.
const apiserverLookupTimeout = 2 * time.Second

// apiserverAddrs are the addresses of each cluster's apiserver, by cluster
// name: no cluster's VIP or external IP may take them (it would capture
// this host's own watch connection), nor another cluster's endpoint.
//
// A server given as an IP address is exact. A host name is resolved here,
// once per start or reload, best effort: the answer is the resolver's of
// this moment, and a name that does not resolve within the timeout
// protects nothing until the next reload (a warning says so). Putting the
// apiserver's address in the kubeconfig is the reliable way.
func (d *Daemon) apiserverAddrs(cfgs []config.Cluster) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	ctx, cancel := context.WithTimeout(context.Background(), apiserverLookupTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range cfgs {
		if c.Server == "" {
			continue
		}
		if ip, ok := hostcheck.APIServerAddr(c.Server); ok {
			out[c.Name] = []netip.Addr{ip}
			continue
		}
		u, err := url.Parse(c.Server)
		if err != nil || u.Hostname() == "" {
			continue
		}
		wg.Add(1)
		go func(name, host string) {
			defer wg.Done()
			ips, err := d.lookupHost(ctx, host)
			if err != nil {
				d.log.Warn("could not resolve the apiserver's host name; other clusters' services are not kept off its addresses until the next reload",
					"cluster", name, "host", host, "err", err)
				return
			}
			for i := range ips {
				ips[i] = ips[i].Unmap().WithZone("")
			}
			mu.Lock()
			out[name] = ips
			mu.Unlock()
		}(c.Name, u.Hostname())
	}
	wg.Wait()
	return out
}

// lookupHost resolves a host name with the system's resolver.
func lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
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
