package modeltest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Change is one kind of change the backends' equivalence tests make to a
// random service of a cluster; Do says whether it found one.
type Change struct {
	Name string
	Do   func(w *World, c *model.ClusterState) bool
}

// Steps are every change on each of clusters, then n random ones, as
// "cluster: change" for Apply.
func (w *World) Steps(n int, clusters ...string) []string {
	var steps []string
	for _, ch := range Changes {
		for _, c := range clusters {
			steps = append(steps, c+": "+ch.Name)
		}
	}
	for range n {
		steps = append(steps, clusters[w.Rng.IntN(len(clusters))]+": "+Changes[w.Rng.IntN(len(Changes))].Name)
	}
	return steps
}

// Apply makes one step on a copy of St, which it then holds, and says
// what the change was.
func (w *World) Apply(step string, changes []Change) (what string) {
	cname, what, _ := strings.Cut(step, ": ")
	w.St = CloneState(w.St)
	c := ClusterOf(w.St, cname)
	for _, ch := range changes {
		if ch.Name == what {
			ch.Do(w, c)
		}
	}
	return what
}

// CloneState copies the clusters and their port maps, not the (immutable)
// ServicePorts.
func CloneState(s *model.State) *model.State {
	out := &model.State{}
	for _, c := range s.Clusters {
		cc := *c
		cc.ServiceCIDRs = slices.Clone(c.ServiceCIDRs)
		cc.Ports = make(map[model.PortKey]*model.ServicePort, len(c.Ports))
		for k, v := range c.Ports {
			cc.Ports[k] = v
		}
		out.Clusters = append(out.Clusters, &cc)
	}
	return out
}

func ClusterOf(s *model.State, name string) *model.ClusterState {
	for _, c := range s.Clusters {
		if c.Name == name {
			return c
		}
	}
	panic("no cluster " + name)
}

// World generates random-ish changes to a State, always making new
// ServicePorts rather than changing published ones.
type World struct {
	Rng  *rand.Rand
	St   *model.State
	next int
}

// Next is a number not handed out before: for names and node ports.
func (w *World) Next() int {
	w.next++
	return w.next
}

func (w *World) keys(c *model.ClusterState) []model.PortKey {
	var ks []model.PortKey
	for k := range c.Ports {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
	return ks
}

func (w *World) PickKey(c *model.ClusterState) (model.PortKey, bool) {
	ks := w.keys(c)
	if len(ks) == 0 {
		return model.PortKey{}, false
	}
	return ks[w.Rng.IntN(len(ks))], true
}

// serviceIP returns a fresh ClusterIP in the cluster's CIDR of the family.
func (w *World) ServiceIP(c *model.ClusterState, v6 bool) string {
	// Never one a port of the cluster has: the model never gives two
	// services one ClusterIP.
	used := map[netip.Addr]bool{}
	for _, sp := range c.Ports {
		used[sp.ClusterIP] = true
	}
	for _, p := range c.ServiceCIDRs {
		if p.Addr().Is6() != v6 {
			continue
		}
		for {
			w.next++
			a := p.Addr().AsSlice()
			a[len(a)-2], a[len(a)-1] = byte(w.next>>8), byte(w.next)
			ip, _ := netip.AddrFromSlice(a)
			if !used[ip] {
				return ip.String()
			}
		}
	}
	panic("no CIDR")
}

func (w *World) Endpoints(n int, v6 bool, port uint16) []string {
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		ip := fmt.Sprintf("10.244.%d.%d", w.Rng.IntN(4), 1+w.Rng.IntN(250))
		if v6 {
			ip = fmt.Sprintf("fd00:244::%x", 1+w.Rng.IntN(1000))
		}
		ep := netip.AddrPortFrom(netip.MustParseAddr(ip), port).String()
		if !seen[ep] {
			seen[ep] = true
			out = append(out, ep)
		}
	}
	return out
}

var protocols = []model.Protocol{model.TCP, model.UDP, model.SCTP}

func (w *World) AddService(c *model.ClusterState, v6 bool, ports int) string {
	w.next++
	name := fmt.Sprintf("svc%d", w.next)
	ip := w.ServiceIP(c, v6)
	for i := range ports {
		pr := protocols[w.Rng.IntN(len(protocols))]
		port := uint16(1000 + w.Rng.IntN(100)*10 + i)
		sp := Svc(c.Name, "ns", name, fmt.Sprintf("p%d", i), pr, ip, port, w.Endpoints(w.Rng.IntN(4), v6, 8000+port)...)
		c.Ports[sp.Key] = sp
	}
	return name
}

// Changes are the kinds of change the equivalence test makes; each applies
// to a random service of the cluster.
var Changes = []Change{
	{"add service", func(w *World, c *model.ClusterState) bool { w.AddService(c, false, 1+w.Rng.IntN(2)); return true }},
	{"add IPv6 service", func(w *World, c *model.ClusterState) bool { w.AddService(c, true, 1); return true }},
	{"remove service port", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			delete(c.Ports, k)
		}
		return ok
	}},
	{"endpoints to 0", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			c.Ports[k] = WithEndpoints(c.Ports[k])
		}
		return ok
	}},
	{"endpoints to n", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			sp := c.Ports[k]
			c.Ports[k] = WithEndpoints(sp, w.Endpoints(1+w.Rng.IntN(4), k.IPv6, 8080)...)
		}
		return ok
	}},
	{"change port", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			sp := *c.Ports[k]
			sp.Port = uint16(2000 + w.Rng.IntN(1000))
			c.Ports[k] = &sp
		}
		return ok
	}},
	{"change ClusterIP", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if !ok {
			return false
		}
		ip := netip.MustParseAddr(w.ServiceIP(c, k.IPv6))
		for k2, sp := range c.Ports {
			if k2.Namespace == k.Namespace && k2.Name == k.Name && k2.IPv6 == k.IPv6 {
				c2 := *sp
				c2.ClusterIP = ip
				c.Ports[k2] = &c2
			}
		}
		return true
	}},
	{"affinity on", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			c.Ports[k] = WithAffinity(c.Ports[k], time.Duration(1+w.Rng.IntN(3))*time.Hour)
		}
		return ok
	}},
	{"affinity off", func(w *World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			c.Ports[k] = WithAffinity(c.Ports[k], 0)
		}
		return ok
	}},
	{"no change", func(w *World, c *model.ClusterState) bool { return true }},
}
