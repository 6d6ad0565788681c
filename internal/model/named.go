package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// A headless or ExternalName service has no address of its own for this
// host to capture, so it programs nothing; what it has is names, which the
// DNS server answers (internal/names). They are built here, next to the
// ports, because their endpoints are addresses the cluster makes this host
// send to: the same checks decide both, and a refused endpoint is refused
// in DNS too. They live beside the ports, never among them, so that no
// backend ever sees one.

// NamedService is what a service without a ClusterIP gives its names.
// Values are never modified once published, as ServicePorts.
type NamedService struct {
	Namespace, Name string
	// ExternalName is the CNAME target of an ExternalName service,
	// lowercase and without the final dot; "" for a headless service.
	ExternalName string
	// Endpoints are a headless service's ready endpoints that checkTarget
	// lets this host send to, sorted by address and unique: at most
	// max_endpoints_per_port of each family, the first in address order.
	Endpoints []NamedEndpoint
}

// NamedEndpoint is one address of a headless service.
type NamedEndpoint struct {
	Addr netip.Addr
	// Hostname is the endpoint's hostname in its EndpointSlice (a
	// StatefulSet's pod name), "" when it has none.
	Hostname string
	// Ports are the named ports its EndpointSlice gives, what SRV
	// records point at. Endpoints of one slice share the slice.
	Ports []NamedPort
}

// NamedPort is a named port of an EndpointSlice.
type NamedPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Equal reports whether two named services are the same; nil is none.
func (n *NamedService) Equal(o *NamedService) bool {
	if n == o {
		return true
	}
	if n == nil || o == nil || n.Namespace != o.Namespace || n.Name != o.Name || n.ExternalName != o.ExternalName {
		return false
	}
	return slices.EqualFunc(n.Endpoints, o.Endpoints, func(a, b NamedEndpoint) bool {
		return a.Addr == b.Addr && a.Hostname == b.Hostname && slices.Equal(a.Ports, b.Ports)
	})
}

// named says whether a service gives names and no ports: headless
// (clusterIP None) or ExternalName.
func named(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone
}

// buildNamed turns a headless or ExternalName service and its slices
// into its names; nil when it gives none.
func buildNamed(cfg ClusterConfig, env *buildEnv, svc *corev1.Service, sl []*discoveryv1.EndpointSlice) (*NamedService, []Problem) {
	n := &NamedService{Namespace: svc.Namespace, Name: svc.Name}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		target := strings.ToLower(strings.TrimSuffix(svc.Spec.ExternalName, "."))
		if why := env.badExternalName(target); why != "" {
			return nil, []Problem{problemf(ReasonExternalName, "spec.externalName %q is %s: no CNAME", svc.Spec.ExternalName, why)}
		}
		n.ExternalName = target
		return n, nil
	}
	if cfg.Reach == reach.NodePort {
		// The pods are behind their nodes' ports, and a headless
		// service has none: its name exists, without addresses.
		return n, nil
	}
	var problems []Problem
	seen := map[netip.Addr]bool{}
	for _, es := range sl {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		ports := namedPorts(es)
		for i, ep := range es.Endpoints {
			// Only ready ones, as CoreDNS answers: a name is a promise
			// that something answers there now.
			if len(ep.Addresses) == 0 || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			c := checkEndpoint(cfg, env, es, i, es.AddressType == discoveryv1.AddressTypeIPv6)
			if c.problem.Msg != "" {
				problems = append(problems, c.problem)
			}
			if c.reason != "" || seen[c.ip] {
				continue
			}
			seen[c.ip] = true
			host := ""
			if ep.Hostname != nil {
				host = *ep.Hostname
			}
			n.Endpoints = append(n.Endpoints, NamedEndpoint{Addr: c.ip, Hostname: host, Ports: ports})
		}
	}
	slices.SortFunc(n.Endpoints, func(a, b NamedEndpoint) int { return a.Addr.Compare(b.Addr) })
	n.Endpoints, problems = capNamed(cfg, n.Endpoints, problems)
	return n, dedupe(problems)
}

// capNamed keeps the first max_endpoints_per_port endpoints of each
// family, in address order: a name is one answer, and a bound on it is
// what keeps one service from filling every reply and the index.
func capNamed(cfg ClusterConfig, eps []NamedEndpoint, problems []Problem) ([]NamedEndpoint, []Problem) {
	n := cfg.limits().perPort()
	v4 := 0
	for v4 < len(eps) && eps[v4].Addr.Is4() {
		v4++
	}
	if v4 <= n && len(eps)-v4 <= n {
		return eps, problems
	}
	out := slices.Clip(slices.Concat(eps[:min(v4, n)], eps[v4:v4+min(len(eps)-v4, n)]))
	return out, append(problems, problemf(ReasonMaxEndpointsPerPort,
		"%smore than %d ready endpoints of a family: the first %d in address order are named", overPerPortPrefix, n, n))
}

// namedPorts are a slice's named ports that SRV records can carry, sorted.
func namedPorts(es *discoveryv1.EndpointSlice) []NamedPort {
	var out []NamedPort
	for _, p := range es.Ports {
		if p.Name == nil || *p.Name == "" || p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		proto := TCP
		if p.Protocol != nil {
			proto = Protocol(*p.Protocol)
		}
		if proto != TCP && proto != UDP && proto != SCTP {
			continue
		}
		out = append(out, NamedPort{Name: *p.Name, Protocol: proto, Port: uint16(*p.Port)})
	}
	slices.SortFunc(out, func(a, b NamedPort) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.Protocol), string(b.Protocol)), cmp.Compare(a.Port, b.Port))
	})
	return slices.Compact(out)
}

// badExternalName says why target may not be a CNAME's target ("" when
// it may). The CNAME is never followed here: the client's own resolver
// follows it, so the target must be a name it would ask the world for,
// nothing that turns a cluster's name into something else.
func (e *buildEnv) badExternalName(target string) string {
	if why := badHostname(target); why != "" {
		return why
	}
	if target == "localhost" || strings.HasSuffix(target, ".localhost") {
		// RFC 6761: this host's loopback, which no endpoint may be.
		return "a loopback name"
	}
	if e != nil {
		for _, z := range e.zones {
			if target == z || strings.HasSuffix(target, "."+z) {
				// Another cluster's name, or a loop through ours: a
				// cluster decides its own names, and nothing else.
				return fmt.Sprintf("in the zone %s, which this host answers", z)
			}
		}
	}
	return ""
}

// badHostname says why s is not a host name as Kubernetes validates
// spec.externalName (lowercase RFC 1123 labels, at most 253 bytes), ""
// when it is. A last label of digits alone is an IP address, which a
// CNAME cannot point at.
func badHostname(s string) string {
	if s == "" {
		return "empty"
	}
	if len(s) > 253 {
		return "longer than 253 bytes"
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "not a valid host name"
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return "not a valid host name"
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "an IP address, not a name"
	}
	return ""
}
