// Package hostcheck refuses a cluster's ranges that collide with this
// host's own network: a service range as it appears here (service_cidrs,
// or the local_service_cidr that maps one) or an allow_external_ips range
// that holds one of its addresses or its default gateway, or that a
// directly connected route covers, would let the cluster take over real
// hosts' addresses (the DNAT happens before routing, so they could no
// longer be reached).
// Routes via a gateway are fine: that is how packets to a local range
// leave this host, once DNATed to an endpoint.
package hostcheck

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

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

// Collision is one range of a cluster that collides with the host.
type Collision struct {
	Cluster string
	// Key is the config key of the range: "local_service_cidr",
	// "service_cidrs[1]" or "allow_external_ips[0]".
	Key   string
	Range netip.Prefix
	// With names what it collides with: an address and its link, the
	// default gateway, or a connected route and its link.
	With string
}

func (c Collision) Error() string {
	switch {
	case strings.HasPrefix(c.Key, "allow_external_ips"):
		return fmt.Sprintf("cluster %q: %s %s holds %s of this host: an external IP the cluster sets there would take over "+
			"this host's own traffic; allow only the cluster's load balancer addresses", c.Cluster, c.Key, c.Range, c.With)
	case c.Key == "local_service_cidr":
		return fmt.Sprintf("cluster %q: local_service_cidr %s collides with %s of this host: its ClusterIPs would shadow real addresses; "+
			"choose a range this host neither has an address in nor a connected route to, such as one of 100.64.0.0/10 that is free here", c.Cluster, c.Range, c.With)
	}
	return fmt.Sprintf("cluster %q: %s %s collides with %s of this host: a ClusterIP the cluster sets there would take over "+
		"this host's own traffic; set local_service_cidr to reach the cluster's ClusterIPs at a range this host neither has an address in "+
		"nor a connected route to, such as one of 100.64.0.0/10 that is free here", c.Cluster, c.Key, c.Range, c.With)
}

// keyedRange is a range of a cluster where that cluster decides where
// packets go, with its config key.
type keyedRange struct {
	key    string
	prefix netip.Prefix
	// lan: the range may overlap a connected network.
	lan bool
}

// owned are the ranges where clusters decide where this host's packets
// go: the service ranges as they appear here (local_service_cidr in place
// of the one it maps) and the allowed external IPs.
func owned(c config.Cluster) []keyedRange {
	var out []keyedRange
	for j, p := range c.ServiceCIDRs {
		if c.LocalServiceCIDR.IsValid() && p.Addr().Is4() == c.LocalServiceCIDR.Addr().Is4() {
			continue // mapped away: these ClusterIPs never appear here
		}
		out = append(out, keyedRange{fmt.Sprintf("service_cidrs[%d]", j), p, false})
	}
	if c.LocalServiceCIDR.IsValid() {
		out = append(out, keyedRange{"local_service_cidr", c.LocalServiceCIDR, false})
	}
	// allow_external_ips is the admin's opt-in to load balancer addresses,
	// which often sit on the host's own LAN (a MetalLB L2 pool): it may
	// overlap a connected network, but not hold the host's own addresses
	// or gateways (the model refuses such single external IPs too).
	for j, p := range c.AllowExternalIPs {
		out = append(out, keyedRange{fmt.Sprintf("allow_external_ips[%d]", j), p, true})
	}
	return out
}

// Check returns the collisions of the clusters' service ranges (as they
// appear here) and allowed external IPs with src's addresses, default
// gateways and connected routes, in cluster order. An error reading src is
// returned as is: nothing could be checked.
func Check(clusters []config.Cluster, src Source) ([]Collision, error) {
	ranges := make([][]keyedRange, len(clusters))
	some := false
	for i, c := range clusters {
		ranges[i] = owned(c)
		some = some || len(ranges[i]) > 0
	}
	if !some {
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
	gateways := Gateways(routes)
	var out []Collision
	for i, c := range clusters {
		for _, kr := range ranges[i] {
			r := kr.prefix
			add := func(with string) { out = append(out, Collision{Cluster: c.Name, Key: kr.key, Range: r, With: with}) }
			for _, a := range addrs {
				if r.Contains(a.IP.Unmap()) {
					add(fmt.Sprintf("address %s on %s", a.IP, a.Link))
				}
			}
			for _, g := range gateways {
				if r.Contains(g) {
					add(fmt.Sprintf("default gateway %s", g))
				}
			}
			for _, rt := range routes {
				// A default route on a link (a point-to-point VPN) covers
				// every range and names no network; only real subnets count.
				if kr.lan || !rt.Connected || rt.Dst.Bits() == 0 || !rt.Dst.Overlaps(r) {
					continue
				}
				add(fmt.Sprintf("connected route %s on %s", rt.Dst, rt.Link))
			}
		}
	}
	return out, nil
}
