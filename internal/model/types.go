// Package model holds the desired state: which ClusterIP:port goes to which
// endpoints, for every configured cluster. It is pure data built from Service
// and EndpointSlice objects; every decision about what is safe and usable is
// made here, so that backends only translate. It never calls the kernel.
package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Protocol is a Service port protocol.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// IPNumber is the protocol's number in the IP header (IANA's), as the
// kernel's conntrack, IPVS and nftables take it; false for a protocol
// the model never holds.
func (p Protocol) IPNumber() (uint8, bool) {
	switch p {
	case TCP:
		return 6, true
	case UDP:
		return 17, true
	case SCTP:
		return 132, true
	}
	return 0, false
}

// PortKey names one port of one service on one IP family: the unit a backend
// programs. Two ClusterIPs of a dual-stack service are two keys.
type PortKey struct {
	Cluster   string
	Namespace string
	Name      string
	Port      string // the Service port's name, "" when it has one unnamed port
	Protocol  Protocol
	IPv6      bool
}

func (k PortKey) String() string {
	s := fmt.Sprintf("%s/%s/%s", k.Cluster, k.Namespace, k.Name)
	if k.Port != "" {
		s += ":" + k.Port
	}
	if k.Protocol != TCP {
		s += "/" + string(k.Protocol)
	}
	if k.IPv6 {
		s += "(v6)"
	}
	return s
}

// Compare orders keys; cheap enough to sort thousands per sync.
func (k PortKey) Compare(o PortKey) int {
	return cmp.Or(
		strings.Compare(k.Cluster, o.Cluster),
		strings.Compare(k.Namespace, o.Namespace),
		strings.Compare(k.Name, o.Name),
		strings.Compare(k.Port, o.Port),
		strings.Compare(string(k.Protocol), string(o.Protocol)),
		boolCompare(k.IPv6, o.IPv6),
	)
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Endpoint is one backend of a service port.
type Endpoint struct {
	Addr netip.AddrPort
	// Terminating is set when the endpoint is used only because no ready
	// endpoint exists (kube-proxy's terminating-endpoint fallback).
	Terminating bool
}

// ServicePort is the desired state of one PortKey. Values are never modified
// once published: a change makes a new ServicePort, so a backend may compare
// pointers to find what changed since its last sync.
type ServicePort struct {
	Key PortKey
	// ClusterIP is the service's ClusterIP as the cluster has it: what
	// status and explain name it by.
	ClusterIP netip.Addr
	// LocalIP is ClusterIP mapped into the cluster's local_service_cidr,
	// where this host reaches it; zero when the cluster maps no range of
	// ClusterIP's family. Use VIP for the address to program.
	LocalIP netip.Addr
	// ExternalIPs are the service's externalIPs and load balancer ingress
	// IPs of this port's family that the cluster's allow_external_ips
	// lets this host capture, sorted and unique. They lead to the same
	// endpoints as the VIP.
	ExternalIPs []netip.Addr
	Port        uint16
	// NodePort is the service port's nodePort (NodePort and LoadBalancer
	// services), 0 when it has none: what reach = "nodeport" sends to and
	// what serve_node_ports answers on.
	NodePort uint16
	// Affinity is the ClientIP session affinity timeout; 0 means none.
	Affinity time.Duration
	// Endpoints are the usable endpoints, sorted and unique. Empty means the
	// service must refuse connections (REJECT), never black-hole them.
	Endpoints []Endpoint
	// NoEndpointsReason says why Endpoints is empty, for logs and status.
	NoEndpointsReason string
	// Excluded are the endpoints of the service's EndpointSlices that are
	// not in Endpoints, each with the reason, sorted by address. They
	// program nothing; they are kept so that `kube-outpost explain` shows
	// the decisions buildService made instead of guessing them again.
	Excluded []ExcludedEndpoint
	// ServedNodePort is NodePort when this host answers on it, at each of
	// its own non-loopback addresses (the cluster's serve_node_ports), and
	// 0 when it does not: the cluster does not serve node ports, the port
	// has none, or it was refused (another cluster's service serves the
	// same node port, or a local process listens on it; see nodeports.go).
	ServedNodePort uint16
}

// Exclusion classifies why an endpoint is left out: a small fixed set that
// scripts can match, with the specifics in ExcludedEndpoint.Detail.
type Exclusion string

const (
	// ExcludedNotReady: not ready, and not a terminating endpoint that
	// still serves either.
	ExcludedNotReady Exclusion = "not-ready"
	// ExcludedNotServing: terminating and no longer serving.
	ExcludedNotServing Exclusion = "terminating-not-serving"
	// ExcludedTerminating: terminating but still serving, and left out
	// because ready endpoints exist (the fallback is not needed).
	ExcludedTerminating Exclusion = "terminating"
	// ExcludedUnsafe: an address that must never be a DNAT target of
	// this cluster on this host (checkTarget: loopback, link-local, a
	// platform address, this host's own or its gateway, another
	// cluster's range or apiserver, ...); Detail says which.
	ExcludedUnsafe Exclusion = "unsafe-address"
	// ExcludedInvalid: not an IP address, or one with an IPv6 zone.
	ExcludedInvalid Exclusion = "invalid-address"
	// ExcludedWrongFamily: an address of the other IP family than its
	// EndpointSlice's addressType.
	ExcludedWrongFamily Exclusion = "wrong-family"
	// ExcludedNoPort: its EndpointSlice gives no usable target port for
	// this service port.
	ExcludedNoPort Exclusion = "no-port"
	// ExcludedOutsideEndpointCIDRs: the cluster sets endpoint_cidrs and
	// the address is in none of them.
	ExcludedOutsideEndpointCIDRs Exclusion = "outside-endpoint-cidrs"
	// ExcludedFiltered: usable, but the service's traffic policy leaves it
	// out (internalTrafficPolicy: Local).
	ExcludedFiltered Exclusion = "filtered"
)

// ExcludedEndpoint is an endpoint left out of a service port, and why.
type ExcludedEndpoint struct {
	// Address is the endpoint's first address, normalized when it parses,
	// as the EndpointSlice has it when it does not.
	Address string
	// Port is its target port for this service port; 0 when its slice
	// gives none.
	Port   uint16
	Reason Exclusion
	// Detail says it in words, naming what the reason alone does not
	// (which unsafe range, which slice lacks which port).
	Detail string
}

// String is the address with its port, "10.0.1.7:8080", or the bare
// address when there is no port.
func (e ExcludedEndpoint) String() string {
	if e.Port == 0 {
		return e.Address
	}
	if ip, err := netip.ParseAddr(e.Address); err == nil {
		return netip.AddrPortFrom(ip, e.Port).String()
	}
	return fmt.Sprintf("%s:%d", e.Address, e.Port)
}

// VIP is the address this host reaches the port's ClusterIP at: its local
// mapping when the cluster has one, else the ClusterIP itself.
func (p *ServicePort) VIP() netip.Addr {
	if p.LocalIP.IsValid() {
		return p.LocalIP
	}
	return p.ClusterIP
}

// Addrs are every address the port is programmed at: VIP first, then the
// external IPs.
func (p *ServicePort) Addrs() []netip.Addr {
	return append([]netip.Addr{p.VIP()}, p.ExternalIPs...)
}

// Equal reports whether two service ports are the same desired state.
//
// Excluded is part of it although it programs nothing: the store keeps the
// old value of a port whose new one is Equal, so leaving Excluded out would
// have explain show the reasons of an earlier change (an endpoint that
// turned ready would still be "not ready"). The price is that a change
// only to left-out endpoints makes a sync in which the backend rewrites
// that one port to the same rules; kube-proxy syncs on such changes too.
func (p *ServicePort) Equal(o *ServicePort) bool {
	if p == o {
		return true
	}
	if p == nil || o == nil || p.Key != o.Key || p.ClusterIP != o.ClusterIP || p.LocalIP != o.LocalIP || p.Port != o.Port || p.NodePort != o.NodePort ||
		p.Affinity != o.Affinity || p.NoEndpointsReason != o.NoEndpointsReason || p.ServedNodePort != o.ServedNodePort {
		return false
	}
	return slices.Equal(p.ExternalIPs, o.ExternalIPs) && slices.Equal(p.Endpoints, o.Endpoints) && slices.Equal(p.Excluded, o.Excluded)
}

// ClusterState is the desired state of one cluster.
type ClusterState struct {
	Name         string
	ServiceCIDRs []netip.Prefix
	// LocalServiceCIDR, when valid, replaces the service CIDR of its
	// family on this host: the ClusterIPs in that one are reached at the
	// same offset in this one (ServicePort.LocalIP).
	LocalServiceCIDR netip.Prefix
	// AllowExternalIPs are the ranges the cluster's external IPs may be
	// programmed in; none is when it is empty.
	AllowExternalIPs []netip.Prefix
	// Synced is false until the cluster's informers have listed everything
	// once. Backends go by PortsKnown.
	Synced bool
	// LastKnown, when not zero, is when the state the cluster's ports
	// are built from was saved: an earlier run kept it, and it is served
	// while the cluster has not synced (after a reboot with its
	// apiserver down, the kernel holds nothing else). The live state
	// replaces it once the informers have listed everything.
	LastKnown time.Time
	Ports     map[PortKey]*ServicePort
	// Services and Endpoints count the services that have Ports and the
	// endpoints of all Ports, as the Store's snapshot counts them while
	// copying Ports; a State made by hand leaves them zero (Counts).
	Services, Endpoints int
	// Names are the cluster's headless and ExternalName services, for
	// the DNS server; nil when it has none. They program nothing, which
	// is why they are apart from Ports: a backend never reads them.
	Names map[types.NamespacedName]*NamedService
	// ServeNodePorts is the cluster's serve_node_ports: its ports'
	// ServedNodePort are answered at this host's own addresses.
	ServeNodePorts bool
}

// Counts are the services that have Ports and the endpoints of all
// Ports: the snapshot's counts, or counted here for a State made by hand.
func (c *ClusterState) Counts() (services, endpoints int) {
	if c.Services > 0 || len(c.Ports) == 0 {
		return c.Services, c.Endpoints
	}
	seen := map[types.NamespacedName]bool{}
	for k, p := range c.Ports {
		seen[types.NamespacedName{Namespace: k.Namespace, Name: k.Name}] = true
		endpoints += len(p.Endpoints)
	}
	return len(seen), endpoints
}

// PortsKnown says whether Ports are the cluster's, from its apiserver or
// from its last known state, and are to be programmed. When they are not,
// a backend must leave the cluster's kernel state as it is: after a
// restart, the rules of the last run keep serving.
func (c *ClusterState) PortsKnown() bool { return c.Synced || !c.LastKnown.IsZero() }

// Ranges are where the cluster's VIPs are on this host: its service CIDRs,
// with the one that LocalServiceCIDR maps replaced by it.
func (c *ClusterState) Ranges() []netip.Prefix {
	return effectiveRanges(c.ServiceCIDRs, c.LocalServiceCIDR)
}

// MappedCIDR is the service CIDR that LocalServiceCIDR stands for; the
// zero value when nothing is mapped.
func (c *ClusterState) MappedCIDR() netip.Prefix {
	return mappedCIDR(c.ServiceCIDRs, c.LocalServiceCIDR)
}

// State is the desired state of every configured cluster, sorted by name.
type State struct {
	Clusters []*ClusterState
	// HostAddrs are this host's own addresses as the daemon last read
	// them (not ipvs mode's VIPs), sorted: where served node ports are
	// answered, loopback and link-local ones excepted (HostNodePortAddrs).
	HostAddrs []netip.Addr
}

// Refusal is an object, or part of one, that is not programmed, and why.
type Refusal struct {
	Cluster, Namespace, Name string
	Reason                   string
}
