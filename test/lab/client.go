//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"sync"
	"syscall"
)

// clientNet holds the point-to-point subnets of routed clients: the k-th
// client gets 10.251.k.0/30, the host side .1 and the client .2.
var clientNet = netip.MustParsePrefix("10.251.0.0/16")

// clientNet6 holds their IPv6 links in a lab with IPv6: the k-th client gets
// fd00:251:0:k::/64, the host side ::1 and the client ::2.
var clientNet6 = netip.MustParsePrefix("fd00:251::/48")

// Client is a machine that is not the host but uses it as its router towards
// the clusters: a legacy box on a segment behind the host. Its packets reach
// kube-outpost's rules through the host's PREROUTING and FORWARD chains, and
// nothing in the lab routes back to its subnet, so a pod can only answer it
// when the host masquerades.
type Client struct {
	Name    string
	NS      string     // network namespace: <ID>-client-<Name>
	IP      netip.Addr // the client's address, 10.251.N.2
	Gateway netip.Addr // the host's address on the client's link, 10.251.N.1
	// In a lab with IPv6 (zero otherwise): the client's fd00:251:0:N::2 and the
	// host's fd00:251:0:N::1 on the same link.
	IPv6        netip.Addr
	GatewayIPv6 netip.Addr

	lab       *Lab
	hostLink  string // host-side end of the veth pair
	closeOnce sync.Once
	closeErr  error
}

// clientAddrs returns the host-side and client addresses of the k-th client
// (1 <= k <= 255).
func clientAddrs(k int) (gw, ip netip.Addr) {
	b := clientNet.Addr().As4()
	b[2] = byte(k)
	b[3] = 1
	gw = netip.AddrFrom4(b)
	b[3] = 2
	return gw, netip.AddrFrom4(b)
}

// clientAddrs6 is clientAddrs for IPv6: fd00:251:0:k::1 and fd00:251:0:k::2.
func clientAddrs6(k int) (gw, ip netip.Addr) {
	b := clientNet6.Addr().As16()
	b[6], b[7] = byte(k>>8), byte(k)
	b[15] = 1
	gw = netip.AddrFrom16(b)
	b[15] = 2
	return gw, netip.AddrFrom16(b)
}

// AddRoutedClient creates namespace <ID>-client-<name>, linked to the host
// namespace by a veth pair on a /30 of its own (10.251.N.0/30, host side .1,
// client .2), with routes for every cluster's ServiceCIDR and for the pod
// network via the host, and no default route. It turns on IPv4 forwarding in
// the host namespace. In a lab with IPv6 the link also carries fd00:251:0:N::/64
// (host ::1, client ::2), the client routes the pods' IPv6 network and every
// ServiceCIDRv6 via the host, and the host forwards IPv6 too. Close removes
// it, and so does the Lab's Close.
func (l *Lab) AddRoutedClient(ctx context.Context, name string) (_ *Client, err error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: client name %q: want [a-z0-9-], at most 40 characters", name)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, c := range l.Clusters {
		if c.ServiceCIDR.Overlaps(clientNet) {
			return nil, fmt.Errorf("lab: cluster %s: ServiceCIDR %v overlaps the routed clients' network %v", c.Name, c.ServiceCIDR, clientNet)
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	if _, ok := l.routed[name]; ok {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: client %s exists", name)
	}
	if l.routSeq >= 255 {
		l.mu.Unlock()
		return nil, errors.New("lab: routed client subnets exhausted")
	}
	l.routSeq++
	k := l.routSeq
	// A nil entry reserves the name while the namespace is set up.
	l.routed[name] = nil
	l.mu.Unlock()

	gw, ip := clientAddrs(k)
	c := &Client{Name: name, NS: l.ID + "-client-" + name, IP: ip, Gateway: gw, lab: l, hostLink: fmt.Sprintf("vcl%d", k)}
	defer func() {
		if err != nil {
			_ = ipIn(l.HostNS, "link", "del", c.hostLink)
			_ = deleteNetns(c.NS)
			l.mu.Lock()
			if l.routed != nil {
				delete(l.routed, name)
			}
			l.mu.Unlock()
		}
	}()

	if err := l.addNetns(c.NS); err != nil {
		return nil, err
	}
	// Created inside the host namespace, the peer moved straight into the
	// client's: nothing touches the machine's own namespace.
	steps := [][]string{
		{"-n", l.HostNS, "link", "add", c.hostLink, "type", "veth", "peer", "name", "eth0", "netns", c.NS},
		{"-n", l.HostNS, "addr", "add", gw.String() + "/30", "dev", c.hostLink},
		{"-n", l.HostNS, "link", "set", c.hostLink, "up"},
		{"-n", c.NS, "addr", "add", ip.String() + "/30", "dev", "eth0"},
		{"-n", c.NS, "link", "set", "eth0", "up"},
		{"-n", c.NS, "route", "add", podNet.String(), "via", gw.String()},
	}
	// replace, not add: two clusters may share a range.
	for _, cl := range l.Clusters {
		steps = append(steps, []string{"-n", c.NS, "route", "replace", cl.ServiceCIDR.Masked().String(), "via", gw.String()})
	}
	if l.ipv6 {
		c.GatewayIPv6, c.IPv6 = clientAddrs6(k)
		gw6 := c.GatewayIPv6.String()
		steps = append(steps,
			[]string{"-n", l.HostNS, "addr", "add", gw6 + "/64", "dev", c.hostLink, "nodad"},
			[]string{"-n", c.NS, "addr", "add", c.IPv6.String() + "/64", "dev", "eth0", "nodad"},
			[]string{"-n", c.NS, "route", "add", podNet6.String(), "via", gw6},
		)
		for _, cl := range l.Clusters {
			if cl.ServiceCIDRv6.IsValid() {
				steps = append(steps, []string{"-n", c.NS, "route", "replace", cl.ServiceCIDRv6.Masked().String(), "via", gw6})
			}
		}
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return nil, err
		}
	}
	if err := writeSysctlIn(l.HostNS, "net/ipv4/ip_forward", "1"); err != nil {
		return nil, fmt.Errorf("ip_forward in %s: %w", l.HostNS, err)
	}
	if l.ipv6 {
		if err := writeSysctlIn(l.HostNS, "net/ipv6/conf/all/forwarding", "1"); err != nil {
			return nil, fmt.Errorf("IPv6 forwarding in %s: %w", l.HostNS, err)
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab is closed")
	}
	l.routed[name] = c
	if l.ipv6 {
		l.logf("routed client %s at %s and %s via %s and %s", name, ip, c.IPv6, gw, c.GatewayIPv6)
	} else {
		l.logf("routed client %s at %s via %s", name, ip, gw)
	}
	return c, nil
}

// Close deletes the client's namespace and its link to the host. It is
// idempotent, and has nothing to do once the Lab is closed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		l := c.lab
		l.mu.Lock()
		closed := l.closed
		if l.routed[c.Name] == c {
			delete(l.routed, c.Name)
		}
		l.mu.Unlock()
		if closed {
			return // the Lab's Close sweeps every namespace of the lab
		}
		// The link first, as for pods: a deleted namespace is dismantled
		// asynchronously.
		c.closeErr = errors.Join(ipIn(l.HostNS, "link", "del", c.hostLink), deleteNetns(c.NS))
	})
	return c.closeErr
}

// Dial dials from the client's namespace: its packets reach the host as
// routed traffic. Use IP literals.
func (c *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(ctx, c.NS, network, addr)
}

// HTTPGet is Lab.HTTPGet from the client.
func (c *Client) HTTPGet(ctx context.Context, url string) (string, error) {
	body, _, err := httpGet(ctx, c.Dial, url)
	return body, err
}

// HTTPGetHeader is Lab.HTTPGetHeader from the client.
func (c *Client) HTTPGetHeader(ctx context.Context, url string) (string, http.Header, error) {
	return httpGet(ctx, c.Dial, url)
}

// UDPRequest is Lab.UDPRequest from the client, on a connected socket, so an
// ICMP port unreachable comes back as ECONNREFUSED.
func (c *Client) UDPRequest(ctx context.Context, addr string, payload string) (string, error) {
	return udpRequest(ctx, c.Dial, addr, payload)
}

// Command returns `ip netns exec <NS> name args...`, killed if the test
// process dies.
func (c *Client) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.NS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}
