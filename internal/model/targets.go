package model

import (
	"fmt"
	"net/netip"
)

// A cluster's objects decide where its own service addresses lead, and
// nothing else. Every address a cluster could make this host send to (an
// endpoint of a slice, a node of reach = "nodeport", a route's gateway) goes
// through checkTarget, and every address it could make this host capture (a
// VIP, an external IP) through protected: what they refuse is what the
// host's owner never delegated to any cluster.

// platformAddrs are the cloud platforms' metadata and platform services at
// fixed addresses outside the link-local and loopback ranges, which are
// refused as a whole (169.254.0.0/16 holds the metadata services of AWS,
// Google Cloud, Azure, OpenStack, DigitalOcean, Oracle Cloud and others,
// and fe80::/10 the IPv6 link-local ones). A DNAT to one of them reaches the
// platform as this host, with this host's credentials. Each is documented
// by its platform; 169.254.169.254 is named for the message's sake.
var platformAddrs = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "the cloud metadata address",
	netip.MustParseAddr("fd00:ec2::254"):   "the cloud metadata address",                  // AWS IMDS over IPv6
	netip.MustParseAddr("fd00:ec2::253"):   "AWS's DNS resolver address",                  // Route 53 Resolver over IPv6
	netip.MustParseAddr("fd00:ec2::123"):   "AWS's time service address",                  // Amazon Time Sync over IPv6
	netip.MustParseAddr("fd00:ec2::23"):    "the EKS Pod Identity Agent address",          // credentials, IPv6 (IPv4: 169.254.170.23)
	netip.MustParseAddr("fd20:ce::254"):    "Google Cloud's metadata address",             // IPv6
	netip.MustParseAddr("100.100.100.200"): "Alibaba Cloud's metadata address",            // in 100.64.0.0/10, not link-local
	netip.MustParseAddr("168.63.129.16"):   "Azure's WireServer (platform agent) address", // a public address, not link-local
}

// unsafeEndpoint says why an address must never be a DNAT target on this
// host whatever the host and the config ("" when it is fine): a Service
// owner could otherwise point a ClusterIP at this host's loopback services
// or the platform's metadata service.
func unsafeEndpoint(ip netip.Addr) string {
	if why, ok := platformAddrs[ip.Unmap().WithZone("")]; ok {
		return why
	}
	switch {
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsMulticast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}

// protectedSuffix ends the problem of a VIP or external IP that protected
// refuses (a VIP's is ReasonProtectedAddress, an external IP's
// ReasonExternalIPs).
const protectedSuffix = ", it would capture traffic that is not its cluster's"

// ownedAddr is an address that belongs to one configured cluster.
type ownedAddr struct {
	cluster string
	addr    netip.Addr
}

func (e *buildEnv) isHost(ip netip.Addr) bool    { return e != nil && e.host[ip] }
func (e *buildEnv) isGateway(ip netip.Addr) bool { return e != nil && e.gateways[ip] }

// ofHost says why ip is this host's and not a cluster's to use: one of its
// own addresses (a DNAT there reaches its own listeners, as a loopback
// endpoint would) or a next hop of its default routes (a DNAT there sends
// a service's traffic through the host's router as if it were the
// service). Neighbours on the host's networks are not refused: pods there
// are normal (the AWS VPC CNI puts them there).
func (e *buildEnv) ofHost(ip netip.Addr) string {
	switch {
	case e.isHost(ip):
		return "this host's own address"
	case e.isGateway(ip):
		return "this host's default gateway"
	}
	return ""
}

// ofOtherCluster says why ip belongs to a configured cluster other than
// cluster: inside its service or local range on this host, or its
// apiserver's address. One cluster must not reach another through this
// host. A cluster's own apiserver stays a valid endpoint: the kubernetes
// Service leads there.
func (e *buildEnv) ofOtherCluster(cluster string, ip netip.Addr) string {
	if e == nil {
		return ""
	}
	for _, r := range e.ranges {
		if r.cluster != cluster && r.prefix.Contains(ip) {
			return fmt.Sprintf("in cluster %q's service range %s on this host", r.cluster, r.prefix)
		}
	}
	for _, a := range e.apiservers {
		if a.cluster != cluster && a.addr == ip {
			return fmt.Sprintf("cluster %q's apiserver address", a.cluster)
		}
	}
	return ""
}

// apiserverOf says which configured cluster's apiserver is at ip, "" when
// none: a service address there would capture this host's own watch of
// that cluster.
func (e *buildEnv) apiserverOf(ip netip.Addr) string {
	if e == nil {
		return ""
	}
	for _, a := range e.apiservers {
		if a.addr == ip {
			return a.cluster
		}
	}
	return ""
}

// protected says why no service address (a VIP or an external IP) of any
// cluster may be ip ("" when it may): it is an address the platform, this
// host or a configured cluster's apiserver answers at, and taking it
// would take their traffic.
func (e *buildEnv) protected(ip netip.Addr) string {
	if why := unsafeEndpoint(ip); why != "" {
		return why
	}
	if why := e.ofHost(ip); why != "" {
		return why
	}
	if c := e.apiserverOf(ip); c != "" {
		return fmt.Sprintf("cluster %q's apiserver address", c)
	}
	return ""
}

// checkTarget is the one check of an address that cluster cfg's objects
// would make this host send traffic to: an endpoint of an EndpointSlice, a
// node of reach = "nodeport". It returns why the address is refused, as an
// Exclusion and the detail that completes "endpoint 10.0.0.1 is ...";
// the zero Exclusion when it is fine. endpoint_cidrs is checked before the
// other clusters' addresses: when an address is outside it, that is the
// reason the operator chose, and the one to report.
func (e *buildEnv) checkTarget(cfg ClusterConfig, ip netip.Addr) (Exclusion, string) {
	if why := unsafeEndpoint(ip); why != "" {
		return ExcludedUnsafe, why
	}
	if why := e.ofHost(ip); why != "" {
		return ExcludedUnsafe, why
	}
	if len(cfg.EndpointCIDRs) > 0 && !inAny(cfg.EndpointCIDRs, ip) {
		return ExcludedOutsideEndpointCIDRs, fmt.Sprintf("outside the cluster's endpoint_cidrs %v", cfg.EndpointCIDRs)
	}
	if why := e.ofOtherCluster(cfg.Name, ip); why != "" {
		return ExcludedUnsafe, why
	}
	return "", ""
}

// targetProblem is the problem of a refused target: what the warning and
// status say, and the reason it counts under.
func targetProblem(what string, ip netip.Addr, cfg ClusterConfig, r Exclusion, detail string) Problem {
	if r == ExcludedOutsideEndpointCIDRs {
		return problemf(ReasonOutsideEndpointCIDRs, "%s %s is outside endpoint_cidrs %v: dropped", what, ip, cfg.EndpointCIDRs)
	}
	return problemf(ReasonUnsafeEndpoint, "%s %s is %s: dropped", what, ip, detail)
}

// CheckTarget says why ip must not be a place that cluster's objects make
// this host send traffic to: the same check as for its endpoints and, with
// reach = "nodeport", its nodes (checkTarget), with the facts the store
// has now. It returns the zero Exclusion when ip is fine. A cluster that
// is not configured has no say at all: everything is refused.
//
// Package routes uses it for a route's gateway. There, endpoint_cidrs
// holds the pods, not the nodes: a caller checking a gateway ignores
// ExcludedOutsideEndpointCIDRs.
func (s *Store) CheckTarget(cluster string, ip netip.Addr) (Exclusion, string) {
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	cd := s.clusters[cluster]
	if cd == nil {
		return ExcludedUnsafe, fmt.Sprintf("of cluster %q, which is not configured", cluster)
	}
	if ip.Zone() != "" {
		return ExcludedInvalid, "an address with an IPv6 zone"
	}
	return s.env.checkTarget(cd.cfg, ip)
}
