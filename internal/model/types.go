// Package model holds the desired state: which ClusterIP:port goes to which
// endpoints, for every configured cluster. It is pure data built from Service
// and EndpointSlice objects; every decision about what is safe and usable is
// made here, so that backends only translate. It never calls the kernel.
package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Protocol is a Service port protocol.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

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
	Key       PortKey
	ClusterIP netip.Addr
	Port      uint16
	// Affinity is the ClientIP session affinity timeout; 0 means none.
	Affinity time.Duration
	// Endpoints are the usable endpoints, sorted and unique. Empty means the
	// service must refuse connections (REJECT), never black-hole them.
	Endpoints []Endpoint
	// NoEndpointsReason says why Endpoints is empty, for logs and status.
	NoEndpointsReason string
}

// Equal reports whether two service ports program the same rules.
func (p *ServicePort) Equal(o *ServicePort) bool {
	if p == o {
		return true
	}
	if p == nil || o == nil || p.Key != o.Key || p.ClusterIP != o.ClusterIP || p.Port != o.Port ||
		p.Affinity != o.Affinity || len(p.Endpoints) != len(o.Endpoints) || p.NoEndpointsReason != o.NoEndpointsReason {
		return false
	}
	for i := range p.Endpoints {
		if p.Endpoints[i] != o.Endpoints[i] {
			return false
		}
	}
	return true
}

// ClusterState is the desired state of one cluster.
type ClusterState struct {
	Name         string
	ServiceCIDRs []netip.Prefix
	// Synced is false until the cluster's informers have listed everything
	// once. A backend must leave the kernel state of an unsynced cluster as
	// it is: after a restart with the apiserver down, the rules of the last
	// run keep serving.
	Synced bool
	Ports  map[PortKey]*ServicePort
}

// State is the desired state of every configured cluster, sorted by name.
type State struct {
	Clusters []*ClusterState
}

// Refusal is an object, or part of one, that is not programmed, and why.
type Refusal struct {
	Cluster, Namespace, Name string
	Reason                   string
}
