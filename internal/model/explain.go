package model

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Query names what `kube-outpost explain` looks at: one service, all its
// ports in both families, or whatever answers on one ClusterIP:port.
type Query struct {
	Cluster, Namespace, Name string
	// Target, when valid, selects service ports by ClusterIP and port
	// instead of by name.
	Target netip.AddrPort
	// Protocol narrows a Target query; "" matches every protocol, so that
	// 10.96.0.10:53 shows both DNS ports.
	Protocol Protocol
}

// queryUsage is the syntax ParseQuery accepts, for its errors.
const queryUsage = "want CLUSTER/NAMESPACE/NAME or CLUSTER-IP:PORT[/PROTOCOL], e.g. prod/default/web or 10.96.0.10:80/TCP"

// ParseQuery reads "cluster/namespace/name" or "IP:PORT[/PROTOCOL]" (an
// IPv6 ClusterIP in brackets: [fd00::10]:53/UDP). Kubernetes names never
// hold a colon and addresses with a port always do, which tells them apart.
func ParseQuery(s string) (Query, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, ":") {
		return parseTarget(s)
	}
	parts := strings.Split(s, "/")
	if len(parts) != 3 || slices.Contains(parts, "") {
		return Query{}, fmt.Errorf("%q: %s", s, queryUsage)
	}
	return Query{Cluster: parts[0], Namespace: parts[1], Name: parts[2]}, nil
}

func parseTarget(s string) (Query, error) {
	addr, proto, hasProto := strings.Cut(s, "/")
	var q Query
	if hasProto {
		switch p := Protocol(strings.ToUpper(proto)); p {
		case TCP, UDP, SCTP:
			q.Protocol = p
		default:
			return Query{}, fmt.Errorf("%q: protocol %q: must be TCP, UDP or SCTP", s, proto)
		}
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return Query{}, fmt.Errorf("%q: %s", s, queryUsage)
	}
	if ap.Port() == 0 || ap.Addr().Zone() != "" {
		return Query{}, fmt.Errorf("%q: a ClusterIP has no zone and a service port is 1-65535", s)
	}
	q.Target = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return q, nil
}

// IsTarget says whether the query selects by ClusterIP:port.
func (q Query) IsTarget() bool { return q.Target.IsValid() }

// String is the query as ParseQuery reads it.
func (q Query) String() string {
	if !q.IsTarget() {
		return q.Cluster + "/" + q.Namespace + "/" + q.Name
	}
	if q.Protocol == "" {
		return q.Target.String()
	}
	return q.Target.String() + "/" + string(q.Protocol)
}

// ErrNotFound is in the chain of Lookup's errors when nothing matches, to
// tell "no such service" from a broken query or daemon.
var ErrNotFound = errors.New("not found")

// Match is one service port a query selected, with its cluster.
type Match struct {
	Cluster *ClusterState
	Port    *ServicePort
	// Addr is where the port is reached on this host that the query
	// asked about: its VIP, or, for a query by external IP, that one.
	Addr netip.Addr
}

// Lookup returns the service ports q selects, sorted by key. When there is
// none, its error wraps ErrNotFound and says what there is instead, which
// is what an operator who typed the query needs next.
func (st *State) Lookup(q Query) ([]Match, error) {
	var out []Match
	for _, c := range st.Clusters {
		if !q.IsTarget() && c.Name != q.Cluster {
			continue
		}
		for _, k := range slices.SortedFunc(maps.Keys(c.Ports), PortKey.Compare) {
			p := c.Ports[k]
			if addr, ok := q.matches(p); ok {
				out = append(out, Match{Cluster: c, Port: p, Addr: addr})
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, st.notFound(q)
}

// matches says whether q selects p, and at which of p's addresses. A
// target query matches the addresses packets are sent to on this host
// (VIP and external IPs), not a ClusterIP that a local_service_cidr maps
// away: that address may be another cluster's here.
func (q Query) matches(p *ServicePort) (netip.Addr, bool) {
	if !q.IsTarget() {
		return p.VIP(), p.Key.Namespace == q.Namespace && p.Key.Name == q.Name
	}
	if p.Port != q.Target.Port() || (q.Protocol != "" && q.Protocol != p.Key.Protocol) {
		return netip.Addr{}, false
	}
	if slices.Contains(p.Addrs(), q.Target.Addr()) {
		return q.Target.Addr(), true
	}
	return netip.Addr{}, false
}

func (st *State) notFound(q Query) error {
	if q.IsTarget() {
		c := st.ClusterFor(q.Target.Addr())
		switch {
		case c == nil:
			for _, m := range st.Clusters {
				if local, ok := m.LocalFor(q.Target.Addr()); ok {
					return fmt.Errorf("%s is in cluster %q's service_cidrs %s, which this host reaches at local_service_cidr %s: ask for %s: %w",
						q.Target.Addr(), m.Name, m.MappedCIDR(), m.LocalServiceCIDR, netip.AddrPortFrom(local, q.Target.Port()), ErrNotFound)
				}
			}
			return fmt.Errorf("%s is in no cluster's service_cidrs or local_service_cidr, and no service has it as an external IP: kube-outpost does not handle it: %w", q.Target.Addr(), ErrNotFound)
		case !c.LastKnown.IsZero():
			return fmt.Errorf("cluster %q has not synced yet, and its last known state, saved %s, has no service port with %s: %w", c.Name, c.LastKnown.Format(time.RFC3339), q, ErrNotFound)
		case !c.Synced:
			return fmt.Errorf("cluster %q has not synced yet, and no service port with %s has arrived so far (the rules of an earlier run stay in force): %w", c.Name, q, ErrNotFound)
		}
		return fmt.Errorf("no service port of cluster %q has %s: %w", c.Name, q, ErrNotFound)
	}
	var names []string
	for _, c := range st.Clusters {
		if c.Name == q.Cluster {
			if !c.LastKnown.IsZero() {
				return fmt.Errorf("cluster %q has not synced yet, and its last known state, saved %s, has no service %s/%s: %w", c.Name, c.LastKnown.Format(time.RFC3339), q.Namespace, q.Name, ErrNotFound)
			}
			if !c.Synced {
				return fmt.Errorf("cluster %q has not synced yet, and no service %s/%s has arrived so far: %w", c.Name, q.Namespace, q.Name, ErrNotFound)
			}
			return fmt.Errorf("cluster %q has no service %s/%s with a ClusterIP kube-outpost programs "+
				"(it does not exist, is headless or ExternalName, is handled by another proxy, or was refused): %w", c.Name, q.Namespace, q.Name, ErrNotFound)
		}
		names = append(names, c.Name)
	}
	return fmt.Errorf("no cluster %q is configured (clusters: %s): %w", q.Cluster, strings.Join(names, ", "), ErrNotFound)
}

// ClusterFor returns the cluster whose VIP ranges on this host (Ranges)
// hold ip, nil when none does. Configured ranges never overlap, so there
// is at most one.
func (st *State) ClusterFor(ip netip.Addr) *ClusterState {
	for _, c := range st.Clusters {
		if inAny(c.Ranges(), ip) {
			return c
		}
	}
	return nil
}
