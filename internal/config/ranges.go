package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// A cluster's service ranges, its local range and its allowed external IPs
// are addresses where that cluster, not this host, decides where packets
// go. Some ranges no cluster can own whatever the host: taking them over
// would redirect the host's own traffic (loopback, "this host", its
// link-local neighbours and the cloud metadata at 169.254.169.254),
// multicast groups, or everything (/0). They are refused at load, so that
// neither check-config nor a start nor a reload accepts them; what depends
// on the host's own network (its addresses, gateway and connected routes)
// is internal/hostcheck's part.

// specialRange is a range no cluster can own, named for the message.
type specialRange struct {
	prefix netip.Prefix
	what   string
}

var specialRanges = []specialRange{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" (a connection to 0.0.0.0 reaches this host itself)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (where cloud metadata answers)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("::/128"), "the unspecified address (a connection to :: reaches this host itself)"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped (IPv4 addresses written as IPv6)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// The widest ranges a cluster may own. A Kubernetes service range is at
// most a /12 (IPv4) and far narrower than a /32 (IPv6); load balancer
// pools are smaller still. A range wider than these is a typo or a wish
// to cover "everything", which hands a cluster's admin other people's
// networks.
const (
	widestIPv4 = 8
	widestIPv6 = 32
)

// rangeKey is one configured range with its key, for the messages.
type rangeKey struct {
	key    string // e.g. "service_cidrs[1]"
	line   int
	prefix netip.Prefix
}

// ranges refuses, in every cluster, service_cidrs, local_service_cidr and
// allow_external_ips that no cluster can own, or that hold the address of
// a configured cluster's apiserver (a Service there could capture this
// host's watch of that cluster). endpoint_cidrs only lose /0: endpoints at
// special addresses are refused by the model whatever endpoint_cidrs says,
// and a pod network may rightly be wide and hold its apiserver.
func (c *checker) ranges(cfg *Config, raw *rawConfig) {
	type apiserver struct {
		who  string
		addr netip.Addr
		line int
	}
	var apiservers []apiserver
	for i, cl := range cfg.Clusters {
		if a, ok := APIServerAddr(cl.Server); ok {
			apiservers = append(apiservers, apiserver{c.clusterName(i, cl), a, c.loc.line(i, "clusters.kubeconfig")})
		}
	}
	for i, cl := range cfg.Clusters {
		who := c.clusterName(i, cl)
		line := func(key string) int { return c.loc.line(i, "clusters."+key) }
		var owned []rangeKey
		owned = append(owned, rawRanges("service_cidrs", line("service_cidrs"), raw.Clusters[i].ServiceCIDRs)...)
		owned = append(owned, rawRanges("local_service_cidr", line("local_service_cidr"), raw.Clusters[i].LocalServiceCIDR)...)
		owned = append(owned, rawRanges("allow_external_ips", line("allow_external_ips"), raw.Clusters[i].AllowExternalIPs)...)
		for _, r := range owned {
			c.ownable(who, r)
			// Clusters served by one apiserver address (lab setups, one
			// apiserver behind several kubeconfigs) are one problem.
			said := map[netip.Addr]bool{}
			for _, a := range apiservers {
				// A service range mapped away never appears on this host.
				mapped := cl.LocalServiceCIDR.IsValid() && r.key != "local_service_cidr" && strings.HasPrefix(r.key, "service_cidrs") &&
					r.prefix.Addr().Is4() == cl.LocalServiceCIDR.Addr().Is4()
				if mapped || !r.prefix.Contains(a.addr) || said[a.addr] {
					continue
				}
				said[a.addr] = true
				whose := "of " + a.who
				if a.who == who {
					whose = "of this cluster"
				}
				c.add(r.line, who, "%s %s holds %s, the apiserver address %s (kubeconfig, line %d): "+
					"an address there could capture this host's connection to that apiserver", r.key, r.prefix, a.addr, whose, a.line)
			}
		}
		for _, r := range rawRanges("endpoint_cidrs", line("endpoint_cidrs"), raw.Clusters[i].EndpointCIDRs) {
			if r.prefix.Bits() == 0 {
				c.add(r.line, who, "%s %s allows every address, as leaving endpoint_cidrs out does, while it reads like a limit: "+
					"list the cluster's pod (and node) networks instead", r.key, r.prefix)
			}
		}
	}
}

// ownable refuses a range no cluster can own.
func (c *checker) ownable(who string, r rangeKey) {
	p := r.prefix
	widest, family := widestIPv4, "IPv4"
	if p.Addr().Is6() {
		widest, family = widestIPv6, "IPv6"
	}
	switch {
	case p.Bits() == 0:
		c.add(r.line, who, "%s %s is every %s address: the cluster would decide where any connection of this host goes; "+
			"list the cluster's own ranges", r.key, p, family)
		return
	case p.Bits() < widest:
		c.add(r.line, who, "%s %s is wider than /%d, more than any cluster owns (a Kubernetes service range is at most "+
			"a /12 for IPv4, and far narrower than a /32 for IPv6); list the cluster's own ranges", r.key, p, widest)
	}
	for _, s := range specialRanges {
		if p.Overlaps(s.prefix) {
			c.add(r.line, who, "%s %s overlaps %s %s, which no cluster can own", r.key, p, s.prefix, s.what)
		}
	}
}

// rawRanges returns the valid CIDRs of a key as written, a string or an
// array of strings, each with its index in the array; invalid ones were
// reported when the key was checked.
func rawRanges(key string, line int, v any) []rangeKey {
	if s, ok := v.(string); ok {
		if p, err := parseCIDR(s); err == nil {
			return []rangeKey{{key, line, p}}
		}
		return nil
	}
	list, _ := v.([]any)
	var out []rangeKey
	for j, e := range list {
		s, _ := e.(string)
		if p, err := parseCIDR(s); err == nil {
			out = append(out, rangeKey{fmt.Sprintf("%s[%d]", key, j), line, p})
		}
	}
	return out
}

// clusterName names clusters[i] as its other problems do.
func (c *checker) clusterName(i int, cl Cluster) string {
	if cl.Name == "" {
		return fmt.Sprintf("clusters[%d]", i)
	}
	return fmt.Sprintf("cluster %q", cl.Name)
}

// APIServerAddr is the address of an apiserver URL (a kubeconfig's
// server), when its host is an IP address. A host name is not resolved
// here: the answer could change, and resolving must not block a config
// check; callers that resolve it pass the addresses they found.
func APIServerAddr(server string) (netip.Addr, bool) {
	u, err := url.Parse(server)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}
