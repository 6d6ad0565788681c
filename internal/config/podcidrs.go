package config

import (
	"fmt"
	"net/netip"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// podCIDRs checks pod_cidrs: the ranges a reach = "routes" cluster's nodes
// take their pod CIDRs from. A Node's spec.podCIDR is whatever the cluster's
// admin writes, and a route to it wins over the host's own routes by being
// more specific: only these ranges, which the host's owner declares, say
// where the cluster may have this host route at all. reachOK is false when
// reach itself was refused (its problem is enough).
func (c *checker) podCIDRs(cl *Cluster, who string, line func(string) int, raw rawCluster, reachOK bool) {
	at := line("pod_cidrs")
	if raw.PodCIDRs == nil {
		if cl.Reach == reach.Routes {
			c.add(line("reach"), who, `pod_cidrs is required with reach = "routes": the ranges this cluster's nodes take their pod CIDRs from `+
				`(kube-controller-manager's --cluster-cidr), like ["10.244.0.0/16"]; a node's pod CIDR outside them is not routed`)
		}
		return
	}
	list, ok := c.strings(at, who, "pod_cidrs", raw.PodCIDRs)
	if !ok {
		return
	}
	if cl.Reach != reach.Routes {
		if reachOK {
			c.add(at, who, `pod_cidrs is only used with reach = "routes"`)
		}
		return
	}
	if len(list) == 0 {
		c.add(at, who, "pod_cidrs is empty: no node's pod CIDR would be routed")
		return
	}
	var out []netip.Prefix
	for j, s := range list {
		p, err := parseCIDR(s)
		if err != nil {
			c.add(at, who, "pod_cidrs[%d] %q: %v", j, s, err)
			continue
		}
		if why := notRoutable(p); why != "" {
			c.add(at, who, "pod_cidrs[%d] %s: %s: no cluster's pods can be there", j, p, why)
			continue
		}
		dup := false
		for k, q := range out {
			if q.Overlaps(p) {
				c.add(at, who, "pod_cidrs[%d] %s overlaps %s, listed before it", j, p, out[k])
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, p)
		}
	}
	cl.PodCIDRs = out
}

// unroutable are ranges that no pod CIDR may overlap: routing any part of
// them to a node would take traffic from where it belongs on this host.
var unroutable = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `overlaps 0.0.0.0/8, "this network"`},
	{netip.MustParsePrefix("127.0.0.0/8"), "overlaps loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "overlaps link-local addresses (the cloud metadata service among them)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "overlaps multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "overlaps the broadcast address"},
	{netip.MustParsePrefix("::/128"), "overlaps the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "overlaps loopback"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "overlaps IPv4-mapped addresses"},
	{netip.MustParsePrefix("fe80::/10"), "overlaps link-local addresses"},
	{netip.MustParsePrefix("ff00::/8"), "overlaps multicast"},
}

func notRoutable(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "every address: a cluster would decide where all of this host's traffic goes"
	}
	for _, u := range unroutable {
		if u.p.Overlaps(p) {
			return u.why
		}
	}
	return ""
}

// podCIDROverlaps refuses pod_cidrs that overlap another cluster's
// pod_cidrs (one destination, two clusters' nodes) or any cluster's service
// ranges, the cluster's own included (an address would be both a Service's
// and a pod's). Run once every cluster is checked; each overlap is reported
// on the later of the two.
func (c *checker) podCIDROverlaps(cfg *Config) {
	for i, cl := range cfg.Clusters {
		if len(cl.PodCIDRs) == 0 {
			continue
		}
		who := fmt.Sprintf("clusters[%d]", i)
		if cl.Name != "" {
			who = fmt.Sprintf("cluster %q", cl.Name)
		}
		at := c.loc.line(i, "clusters.pod_cidrs")
		for _, p := range cl.PodCIDRs {
			for j, other := range cfg.Clusters[:i] {
				for _, q := range other.PodCIDRs {
					if p.Overlaps(q) {
						c.add(at, who, "pod_cidrs %s overlaps %s pod_cidrs %s (line %d): one destination cannot be routed to two clusters' nodes",
							p, whoOf(other, j), q, c.loc.line(j, "clusters.pod_cidrs"))
					}
				}
			}
			for _, s := range c.cidrs {
				if p.Overlaps(s.prefix) {
					c.add(at, who, "pod_cidrs %s overlaps %s %s %s (line %d): an address cannot be both a Service's and a pod's",
						p, s.who, s.key, s.prefix, s.line)
				}
			}
		}
	}
}

func whoOf(cl Cluster, i int) string {
	if cl.Name != "" {
		return fmt.Sprintf("cluster %q", cl.Name)
	}
	return fmt.Sprintf("clusters[%d]", i)
}
