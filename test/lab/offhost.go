//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"time"
)

// maxOffHosts bounds AddOffHost: the k-th off-host machine has infra
// address 10.250.0.(210+k), between the apiservers and the nodes.
const maxOffHosts = 9

// OffHost is a machine beyond the host's default gateway, such as a cloud's
// metadata service: namespace <ID>-off-<name> on the infra bridge at
// 10.250.0.(210+k), holding Addrs, which the router routes to it. The host
// has no route of its own to Addrs: it reaches them only through a default
// route via the router (AddHostDefaultRoute), as a cloud VM reaches
// 169.254.169.254 or 100.100.100.200.
type OffHost struct {
	Name  string
	NS    string
	IP    netip.Addr   // its address on the infra network
	Addrs []netip.Addr // the addresses it serves, routed to it by the router
}

// AddOffHost creates an off-host machine that answers HTTP on port at each
// of addrs with "<name>" (headers X-Pod: <name>, X-Remote-Addr: the client
// as it sees it). Addresses the lab uses are refused. Lab.Close removes it.
func (l *Lab) AddOffHost(ctx context.Context, name string, port int, addrs ...netip.Addr) (*OffHost, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: off-host name %q: want [a-z0-9-], at most 40 characters", name)
	}
	if l.remote != "" {
		return nil, errors.New("lab: a remote lab has no off-host machines")
	}
	if len(addrs) == 0 {
		return nil, errors.New("lab: an off-host machine needs an address to serve")
	}
	for _, a := range addrs {
		if !a.Is4() {
			return nil, fmt.Errorf("lab: off-host address %v: want IPv4", a)
		}
		for _, p := range []netip.Prefix{infraNet, podNet, nodePodNet, clientNet} {
			if p.Contains(a) {
				return nil, fmt.Errorf("lab: off-host address %v is in the lab network %v", a, p)
			}
		}
		for _, c := range l.Clusters {
			if c.ServiceCIDR.Contains(a) {
				return nil, fmt.Errorf("lab: off-host address %v is in cluster %s's service range", a, c.Name)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	if l.offHosts >= maxOffHosts {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: at most %d off-host machines", maxOffHosts)
	}
	l.offHosts++
	k := l.offHosts
	l.mu.Unlock()

	o := &OffHost{Name: name, NS: l.ID + "-off-" + name, IP: netip.AddrFrom4([4]byte{10, 250, 0, byte(210 + k)}), Addrs: addrs}
	if err := l.addNetns(o.NS); err != nil {
		return nil, err
	}
	if err := vethInto(l.routerNS, "infra", fmt.Sprintf("voff%d", k), o.NS); err != nil {
		return nil, err
	}
	steps := [][]string{{"-n", o.NS, "addr", "add", o.IP.String() + "/24", "dev", "eth0"}}
	for _, a := range addrs {
		steps = append(steps,
			// On lo: the machine owns the address, whatever link the
			// packets came in on.
			[]string{"-n", o.NS, "addr", "add", a.String() + "/32", "dev", "lo"},
			[]string{"-n", l.routerNS, "route", "add", a.String() + "/32", "via", o.IP.String()},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return nil, err
		}
	}
	for _, a := range addrs {
		if err := l.serveHTTP(o.NS, netip.AddrPortFrom(a, uint16(port)), name); err != nil {
			return nil, fmt.Errorf("off-host %s: %w", name, err)
		}
	}
	l.logf("off-host %s at %s serving %v on port %d", name, o.IP, addrs, port)
	return o, nil
}

// Gateway is the router's address on the infra network: the next hop of
// every route the host has, and of its default route once
// AddHostDefaultRoute added one.
func (l *Lab) Gateway() netip.Addr { return routerInfra }

// AddHostDefaultRoute gives the host namespace a default route via the
// router, as a real host has one via its gateway. The router itself has
// none, so nothing leaves the lab: addresses nobody in the lab owns get an
// ICMP unreachable from the router.
func (l *Lab) AddHostDefaultRoute() error {
	if l.remote != "" {
		return errors.New("lab: a remote lab's host keeps its own routes")
	}
	return ipIn(l.HostNS, "route", "add", "default", "via", routerInfra.String())
}

// ServeOnGateway makes the router, the host's gateway, answer HTTP on port
// of its infra address with "<name>", as a home router's or a firewall's
// admin interface would. Lab.Close stops it.
func (l *Lab) ServeOnGateway(port int, name string) error {
	if l.remote != "" {
		return errors.New("lab: a remote lab's gateway is not the lab's")
	}
	return l.serveHTTP(l.routerNS, netip.AddrPortFrom(routerInfra, uint16(port)), name)
}

// serveHTTP serves podHandler(name) at addr inside ns until Close.
func (l *Lab) serveHTTP(ns string, addr netip.AddrPort, name string) error {
	ln, err := listenIn(ns, "tcp4", addr.String())
	if err != nil {
		return fmt.Errorf("listen %s in %s: %w", addr, ns, err)
	}
	srv := &http.Server{Handler: podHandler(name), ReadHeaderTimeout: 10 * time.Second}
	if err := l.track(srv); err != nil {
		ln.Close()
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// track has Close close c; when the lab is closed already, it is refused.
func (l *Lab) track(c io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab is closed")
	}
	l.servers = append(l.servers, c)
	return nil
}
