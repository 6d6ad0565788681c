package model

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// serve_node_ports makes this host answer at its own addresses on the
// nodePort of every service of the cluster, as a node's kube-proxy does.
// Two things can stand in the way, and each refuses the node port (the
// service's ClusterIP is programmed as usual):
//
//   - a service of another cluster (or, from a broken object, of the same
//     one) served at the same node port and protocol on this host: the one
//     that sorts first by the order of claims.go (the cluster earlier in
//     the config; inside one cluster, the older service, then the name)
//     keeps it, so the outcome depends neither on the order events arrive
//     in nor on creation times a cluster's apiserver could backdate;
//   - a process of this host listening on that port and protocol: the
//     rules would take its traffic away from it without a word.
//
// Node ports are claimed per IP family: an IPv4 and an IPv6 port never
// meet, the addresses they are answered at differ.

// Problems about node ports start with these (ReasonNodePortConflict,
// ReasonNodePortInUse).
const (
	nodePortConflictPrefix = "node port conflict: "
	nodePortInUsePrefix    = "node port in use: "
)

// Listener is a socket of a local process that takes connections (TCP,
// SCTP) or datagrams (an unconnected UDP socket) on a port of this host.
type Listener struct {
	Protocol Protocol
	Addr     netip.AddrPort
}

func (l Listener) String() string { return fmt.Sprintf("%s/%s", l.Addr, l.Protocol) }

// listenKey is a port and protocol that a local process holds, whatever
// its family: a socket on [::] usually takes IPv4 too, and one on an
// address of one family still makes a node port of that number a trap for
// whoever configured it, so both families' node ports are refused.
type listenKey struct {
	proto Protocol
	port  uint16
}

// nodeKey is the claim of a port's served node port: the family's
// unspecified address, the node port and the protocol.
func nodeKey(p *ServicePort) (claimKey, bool) {
	if p.ServedNodePort == 0 {
		return claimKey{}, false
	}
	a := netip.IPv4Unspecified()
	if p.Key.IPv6 {
		a = netip.IPv6Unspecified()
	}
	return claimKey{addr: a, port: p.ServedNodePort, proto: p.Key.Protocol}, true
}

// nodeKeysOf are the node port claims of the builds given.
func nodeKeysOf(bs ...*builtService) map[claimKey]bool {
	out := map[claimKey]bool{}
	for _, b := range bs {
		if b == nil {
			continue
		}
		for _, p := range b.ports {
			if k, ok := nodeKey(p); ok {
				out[k] = true
			}
		}
	}
	return out
}

// addNodeClaimants adds to out the services that claim one of keys: the
// outcome of their claims may have changed.
func (s *Store) addNodeClaimants(out map[owner]bool, keys map[claimKey]bool) {
	for k := range keys {
		for _, pk := range s.nodeClaims[k] {
			out[owner{pk.Cluster, types.NamespacedName{Namespace: pk.Namespace, Name: pk.Name}}] = true
		}
	}
}

// settleNodePort is the node port p is served at, 0 when it is not, and
// the problem that says why not when p wanted one.
func (s *Store) settleNodePort(p *ServicePort) (uint16, Problem) {
	k, ok := nodeKey(p)
	if !ok {
		return 0, Problem{}
	}
	if l, held := s.listeners[listenKey{proto: k.proto, port: k.port}]; held {
		return 0, problemf(ReasonNodePortInUse, "%snode port %d/%s of port %s: a local process on this host listens on it (%s): "+
			"not served, so that its traffic is not taken from it; stop it, or give the service another nodePort",
			nodePortInUsePrefix, k.port, k.proto, portName(p.Key.Port, p.Key.Protocol), l)
	}
	if w, ok := s.winner(s.nodeClaims[k], s.holdsVIP); ok && w != p.Key {
		return 0, problemf(ReasonNodePortConflict, "%snode port %d/%s of port %s is already served on this host for cluster %q service %s/%s (port %s), "+
			"which wins (its cluster comes first in the config, or it is older in the same cluster): not served for this one",
			nodePortConflictPrefix, k.port, k.proto, portName(p.Key.Port, p.Key.Protocol), w.Cluster, w.Namespace, w.Name,
			portName(w.Port, w.Protocol))
	}
	return k.port, Problem{}
}

// SetLocalListeners tells the model which ports local processes listen on,
// as the daemon last read them; a node port one of them holds is not
// served. Sockets bound to a loopback address are left out: node ports are
// never served there. Only the services whose node ports a change concerns
// are looked at again, so calling it at every sync costs little.
func (s *Store) SetLocalListeners(ls []Listener) {
	next := map[listenKey]string{}
	for _, l := range slices.SortedFunc(slices.Values(ls), func(a, b Listener) int {
		return strings.Compare(a.String(), b.String())
	}) {
		a := l.Addr.Addr().Unmap()
		if a.IsLoopback() || l.Addr.Port() == 0 {
			continue
		}
		k := listenKey{proto: l.Protocol, port: l.Addr.Port()}
		if _, seen := next[k]; !seen {
			next[k] = netip.AddrPortFrom(a, l.Addr.Port()).String()
		}
	}
	s.mu.Lock()
	if maps.Equal(next, s.listeners) {
		s.mu.Unlock()
		return
	}
	touched := map[claimKey]bool{}
	for _, m := range []map[listenKey]string{s.listeners, next} {
		for k := range m {
			if next[k] == s.listeners[k] {
				continue
			}
			for _, a := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
				touched[claimKey{addr: a, port: k.port, proto: k.proto}] = true
			}
		}
	}
	s.listeners = next
	affected := map[owner]bool{}
	s.addNodeClaimants(affected, touched)
	changed := false
	for _, o := range sortedOwners(affected) {
		if c := s.clusters[o.cluster]; c != nil && s.materialize(c, o.nn) {
			changed = true
		}
	}
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

// hostAddrs are this host's addresses, sorted.
func (s *Store) hostAddrs() []netip.Addr {
	return slices.SortedFunc(maps.Keys(s.env.host), netip.Addr.Compare)
}

// NodePortAddrs are the addresses of one family among addrs that served
// node ports are answered at: not loopback (CVE-2020-8558: a node port on
// 127.0.0.1 needs route_localnet, which opens every loopback listener to
// the network), not link-local (ambiguous without an interface), nor any
// other address that is no unicast destination.
func NodePortAddrs(addrs []netip.Addr, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() != v6 || !a.IsValid() || a.Zone() != "" || a.IsLoopback() || a.IsLinkLocalUnicast() ||
			a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
			continue
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
