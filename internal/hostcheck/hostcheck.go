// Package hostcheck refuses a local_service_cidr that collides with this
// host's own network: a range that holds one of its addresses, or that a
// directly connected route covers, would take over real hosts' addresses
// (the DNAT happens before routing, so they could no longer be reached).
// Routes via a gateway are fine: that is how packets to a local range
// leave this host, once DNATed to an endpoint.
package hostcheck

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// Address is an address of this host, on a link.
type Address struct {
	IP   netip.Addr
	Link string
}

// Route is a route of this host's main routing table.
type Route struct {
	Dst  netip.Prefix
	Link string
	// Connected: scope link, without a gateway: the range is a network
	// on Link itself.
	Connected bool
	// Gateway is the next hop, when the route has one (the first of a
	// multipath route's).
	Gateway netip.Addr
}

// Source reads this host's addresses and routes; Netlink is the real one,
// tests use a fixed list.
type Source interface {
	Addrs() ([]Address, error)
	Routes() ([]Route, error)
}

// Collision is one local_service_cidr that collides with the host.
type Collision struct {
	Cluster string
	Range   netip.Prefix
	// With names what it collides with: an address or a route, and its
	// link.
	With string
}

func (c Collision) Error() string {
	return fmt.Sprintf("cluster %q: local_service_cidr %s collides with %s of this host: its ClusterIPs would shadow real addresses; "+
		"choose a range this host neither has an address in nor a connected route to, such as one of 100.64.0.0/10 that is free here", c.Cluster, c.Range, c.With)
}

// Check returns the collisions of the clusters' local_service_cidr with
// src's addresses and connected routes, in cluster order. An error reading
// src is returned as is: nothing could be checked.
func Check(clusters []config.Cluster, src Source) ([]Collision, error) {
	var mapped []config.Cluster
	for _, c := range clusters {
		if c.LocalServiceCIDR.IsValid() {
			mapped = append(mapped, c)
		}
	}
	if len(mapped) == 0 {
		return nil, nil // no need to ask the kernel
	}
	addrs, err := src.Addrs()
	if err != nil {
		return nil, fmt.Errorf("read this host's addresses: %w", err)
	}
	routes, err := src.Routes()
	if err != nil {
		return nil, fmt.Errorf("read this host's routes: %w", err)
	}
	slices.SortFunc(addrs, func(a, b Address) int { return a.IP.Compare(b.IP) })
	var out []Collision
	for _, c := range mapped {
		r := c.LocalServiceCIDR
		for _, a := range addrs {
			if r.Contains(a.IP.Unmap()) {
				out = append(out, Collision{Cluster: c.Name, Range: r, With: fmt.Sprintf("address %s on %s", a.IP, a.Link)})
			}
		}
		for _, rt := range routes {
			// A default route on a link (a point-to-point VPN) covers
			// every range and names no network; only real subnets count.
			if !rt.Connected || rt.Dst.Bits() == 0 || !rt.Dst.Overlaps(r) {
				continue
			}
			out = append(out, Collision{Cluster: c.Name, Range: r, With: fmt.Sprintf("connected route %s on %s", rt.Dst, rt.Link)})
		}
	}
	return out, nil
}
