package model

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Two service ports must never be programmed at the same address, port and
// protocol: the backends would pick one by the order of their rules, and
// which one would change with unrelated events. Config validation keeps
// the clusters' VIP ranges apart, and buildService keeps external IPs out
// of them, but external IPs of two services (of one cluster or two) can
// still meet, and the VIP check stays as a defence. Each address:port is
// held by the claimant that sorts first (before): between clusters, the
// one earlier in the config, which is the admin's choice and nothing a
// cluster can change; inside one cluster, the older service (creation
// time), then by name. A cluster's apiserver sets its objects' creation
// times, and a compromised one would backdate them to win: so a creation
// time is only ever compared with another of the same apiserver. That
// order depends on nothing but the objects and the config, so the same
// state wins after a restart or whatever order the events arrive in.
// Losers are refused, logged and counted like any other problem.

// conflictPrefix starts every problem about a claim lost to another
// service (ReasonConflict).
const conflictPrefix = "conflict: "

// claimKey is an address, port and protocol on this host.
type claimKey struct {
	addr  netip.Addr
	port  uint16
	proto Protocol
}

func (k claimKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.addr, k.port), k.proto)
}

func vipKey(p *ServicePort) claimKey {
	return claimKey{addr: p.VIP(), port: p.Port, proto: p.Key.Protocol}
}

func extKeys(p *ServicePort) []claimKey {
	out := make([]claimKey, 0, len(p.ExternalIPs))
	for _, ip := range p.ExternalIPs {
		out = append(out, claimKey{addr: ip, port: p.Port, proto: p.Key.Protocol})
	}
	return out
}

// builtService is one service as buildService made it.
type builtService struct {
	ports []*ServicePort
	// named is a headless or ExternalName service's names, which claim
	// nothing: only ports meet other services at an address.
	named    *NamedService
	problems []Problem
	created  time.Time
}

// claimant is a built port and what orders it among claimants.
type claimant struct {
	port    *ServicePort
	created time.Time
}

type owner struct {
	cluster string
	nn      types.NamespacedName
}

func sortedOwners(m map[owner]bool) []owner {
	out := make([]owner, 0, len(m))
	for o := range m {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b owner) int {
		return cmp.Or(strings.Compare(a.cluster, b.cluster), strings.Compare(a.nn.Namespace, b.nn.Namespace), strings.Compare(a.nn.Name, b.nn.Name))
	})
	return out
}

// claims are the claimants of each address:port, in no order. A slice,
// not a set: nearly every key has one claimant, and a map per key cost
// 900 bytes a service port (a tenth of the model's heap at 10,000
// services); with many claimants, winner already walks them all.
type claims map[claimKey][]PortKey

func (m claims) add(k claimKey, pk PortKey) {
	if !slices.Contains(m[k], pk) {
		m[k] = append(m[k], pk)
	}
}

func (m claims) del(k claimKey, pk PortKey) {
	set := m[k]
	if i := slices.Index(set, pk); i >= 0 {
		if len(set) == 1 {
			delete(m, k)
			return
		}
		m[k] = slices.Delete(set, i, i+1)
	}
}

func (s *Store) claim(b *builtService) {
	if b == nil {
		return
	}
	for _, p := range b.ports {
		s.cands[p.Key] = &claimant{port: p, created: b.created}
		s.vipClaims.add(vipKey(p), p.Key)
		for _, k := range extKeys(p) {
			s.extClaims.add(k, p.Key)
		}
		if k, ok := nodeKey(p); ok {
			s.nodeClaims.add(k, p.Key)
		}
	}
}

func (s *Store) unclaim(b *builtService) {
	if b == nil {
		return
	}
	for _, p := range b.ports {
		// A port key is one service's, so this claimant is this
		// service's own, as built last time.
		delete(s.cands, p.Key)
		s.vipClaims.del(vipKey(p), p.Key)
		for _, k := range extKeys(p) {
			s.extClaims.del(k, p.Key)
		}
		if k, ok := nodeKey(p); ok {
			s.nodeClaims.del(k, p.Key)
		}
	}
}

// affected are the services whose published ports may change when the
// claims on these keys changed: the claimants of the VIPs, and the
// claimants of the external IPs of those and of the keys given. A port
// that loses its VIP withdraws its external IPs, which can hand them to
// another service; nothing goes further than that.
func (s *Store) affected(vips, exts map[claimKey]bool) map[owner]bool {
	out := map[owner]bool{}
	add := func(pk PortKey) {
		out[owner{pk.Cluster, types.NamespacedName{Namespace: pk.Namespace, Name: pk.Name}}] = true
	}
	exts = maps.Clone(exts)
	for k := range vips {
		for _, pk := range s.vipClaims[k] {
			add(pk)
			if c := s.cands[pk]; c != nil {
				for _, ek := range extKeys(c.port) {
					exts[ek] = true
				}
			}
		}
	}
	for k := range exts {
		for _, pk := range s.extClaims[k] {
			add(pk)
		}
	}
	return out
}

// before orders two claimants: the cluster earlier in the config first;
// inside one cluster, the older service, then the port key.
func (s *Store) before(a, b PortKey) bool {
	if oa, ob := s.order[a.Cluster], s.order[b.Cluster]; oa != ob {
		return oa < ob
	}
	if a.Cluster == b.Cluster {
		if c := s.cands[a].created.Compare(s.cands[b].created); c != 0 {
			return c < 0
		}
	}
	return a.Compare(b) < 0
}

// winner is the first of the claimants that eligible accepts; ok reports
// whether there is one.
func (s *Store) winner(claimants []PortKey, eligible func(PortKey) bool) (PortKey, bool) {
	var best PortKey
	found := false
	for _, pk := range claimants {
		if eligible != nil && !eligible(pk) {
			continue
		}
		if !found || s.before(pk, best) {
			best, found = pk, true
		}
	}
	return best, found
}

func (s *Store) holdsVIP(pk PortKey) bool {
	c := s.cands[pk]
	if c == nil {
		return false
	}
	w, ok := s.winner(s.vipClaims[vipKey(c.port)], nil)
	return ok && w == pk
}

// settle applies the claims to one built service: the ports and external
// IPs it holds, and its problems with a line for each one it lost.
func (s *Store) settle(b *builtService) ([]*ServicePort, []Problem) {
	problems := slices.Clone(b.problems)
	var out []*ServicePort
	for _, p := range b.ports {
		vk := vipKey(p)
		if w, ok := s.winner(s.vipClaims[vk], nil); ok && w != p.Key {
			problems = append(problems, s.lost(p, vk, w, "its VIP"))
			continue
		}
		var exts []netip.Addr
		for _, ek := range extKeys(p) {
			if w, ok := s.winner(s.extClaims[ek], s.holdsVIP); ok && w != p.Key {
				problems = append(problems, s.lost(p, ek, w, "external IP"))
				continue
			}
			exts = append(exts, ek.addr)
		}
		served, why := s.settleNodePort(p)
		if why.Msg != "" {
			problems = append(problems, why)
		}
		if len(exts) != len(p.ExternalIPs) || served != p.ServedNodePort {
			c := *p // published ports are never modified: a copy
			c.ExternalIPs = exts
			c.ServedNodePort = served
			p = &c
		}
		out = append(out, p)
	}
	return out, dedupe(problems)
}

// lost says which service holds what p wanted, in words that name it.
func (s *Store) lost(p *ServicePort, k claimKey, w PortKey, what string) Problem {
	return problemf(ReasonConflict, "%s%s %s of port %s is already programmed for cluster %q service %s/%s, which wins "+
		"(its cluster comes first in the config, or it is older in the same cluster): not programmed for this one",
		conflictPrefix, what, k, portName(p.Key.Port, p.Key.Protocol), w.Cluster, w.Namespace, w.Name)
}
