// Package names answers DNS queries for the clusters' services from the
// desired state: <service>.<namespace>.svc.<zone> is the address this host
// reaches the service at (its ClusterIP, or its local address under
// local_service_cidr), _<port>._<proto>.<service>... its named ports, and
// the reverse names of those addresses. A headless service's name is its
// endpoints' addresses, each also named on its own; an ExternalName
// service's is a CNAME (named.go). It answers only for its zones and
// never forwards: it is not a recursive resolver.
//
// The Index is pure data built from a model.State, replaced whole after
// each sync; the Server answers from the one it holds at the time.
package names

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Zones are the zones a cluster answers: its dns_zone, and cluster.local
// for the one with dns_default. Lowercase, without the final dot.
type Zones map[string][]string

// Index is what the server answers from. It is never changed once built.
type Index struct {
	// zones are the forward zones, fully qualified, longest first so that
	// the first match is the closest enclosing one.
	zones []string
	// hosts are the addresses of the service names and of a headless
	// service's endpoint names; srv their named ports.
	hosts map[string][]netip.Addr
	srv   map[string][]srvTarget
	// cname are the ExternalName services' targets, fully qualified.
	cname map[string]string
	// names are every name that exists, records or not (the empty
	// non-terminals <ns>.svc.<zone> and _<proto>.<svc>...): a query for
	// one gets NODATA, not NXDOMAIN, which would tell a resolver that
	// nothing exists below it (RFC 8020).
	names map[string]bool
	// ptr are the reverse names of the addresses, and ranges the service
	// ranges whose reverse names are ours to answer.
	ptr    map[netip.Addr][]string
	ranges []netip.Prefix
	// owner is the cluster of each forward zone, and rangeOwner that of
	// each of ranges, at the same index: what a query is counted under.
	owner      map[string]string
	rangeOwner []string
	// unready are the zones of clusters whose services are not known yet
	// (not synced, no last known state): their names get SERVFAIL, which
	// a resolver retries soon, rather than a "no such name" it would
	// cache.
	unready map[string]bool
	// skipped are the service ports whose names cannot be DNS names,
	// which only an apiserver that validates nothing would send, as
	// cluster/namespace/name:port, sorted.
	skipped []string
}

type srvTarget struct {
	port   uint16
	target string
}

// Build indexes the ports of every cluster whose ports are known (synced,
// or served from the last known state) under the cluster's zones.
func Build(st *model.State, zones Zones) *Index {
	ix := &Index{hosts: map[string][]netip.Addr{}, srv: map[string][]srvTarget{}, cname: map[string]string{}, names: map[string]bool{},
		ptr: map[netip.Addr][]string{}, unready: map[string]bool{}, owner: map[string]string{}}
	for cluster, zs := range zones {
		for _, z := range zs {
			ix.zones = append(ix.zones, fqdn(z))
			ix.owner[fqdn(z)] = cluster
		}
	}
	// Longest first; equal lengths in order, so that a build is the same
	// whatever the map's order.
	slices.SortFunc(ix.zones, func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b)) })
	ix.zones = slices.Compact(ix.zones)
	for _, z := range ix.zones {
		ix.names[z] = true
	}
	known := map[string]bool{}
	for _, c := range st.Clusters {
		for _, r := range c.Ranges() {
			ix.ranges = append(ix.ranges, r)
			ix.rangeOwner = append(ix.rangeOwner, c.Name)
		}
		if !c.PortsKnown() {
			continue
		}
		known[c.Name] = true
		for _, z := range zones[c.Name] {
			for _, p := range c.Ports {
				ix.add(p, fqdn(z))
			}
			for _, n := range c.Names {
				ix.addNamed(c.Name, n, fqdn(z)) // named.go
			}
		}
	}
	for cluster, zs := range zones {
		if !known[cluster] {
			for _, z := range zs {
				ix.unready[fqdn(z)] = true
			}
		}
	}
	for name, as := range ix.hosts {
		slices.SortFunc(as, netip.Addr.Compare)
		ix.hosts[name] = slices.Compact(as)
	}
	for name, ts := range ix.srv {
		slices.SortFunc(ts, func(a, b srvTarget) int {
			return cmp.Or(cmp.Compare(a.port, b.port), strings.Compare(a.target, b.target))
		})
		ix.srv[name] = slices.Compact(ts)
	}
	for a, ns := range ix.ptr {
		slices.Sort(ns)
		ix.ptr[a] = slices.Compact(ns)
	}
	// A port is added once per zone of its cluster, and skipped as often.
	slices.Sort(ix.skipped)
	ix.skipped = slices.Compact(ix.skipped)
	return ix
}

// add indexes one service port under zone (fully qualified).
func (ix *Index) add(p *model.ServicePort, zone string) {
	k := p.Key
	what := k.Cluster + "/" + k.Namespace + "/" + k.Name + ":" + k.Port
	host, ok := ix.service(k.Namespace, k.Name, zone, what)
	if !ok {
		return
	}
	vip := p.VIP()
	ix.hosts[host] = append(ix.hosts[host], vip)
	ix.ptr[vip] = append(ix.ptr[vip], host)
	if k.Port == "" {
		return // an unnamed port has no SRV name
	}
	ix.addSRV(host, k.Port, k.Protocol, srvTarget{p.Port, host}, what)
}

// service makes the name of a service and the names above it exist, and
// returns it; false (skipped as what) when its names cannot be labels.
func (ix *Index) service(namespace, name, zone, what string) (string, bool) {
	if !label(name) || !label(namespace) {
		ix.skip(what)
		return "", false
	}
	ns := namespace + ".svc." + zone
	host := name + "." + ns
	ix.names["svc."+zone] = true
	ix.names[ns] = true
	ix.names[host] = true
	return host, true
}

// addSRV adds t to the SRV records of the named port of the service host;
// a port name that cannot be a label is skipped as what.
func (ix *Index) addSRV(host, port string, proto model.Protocol, t srvTarget, what string) {
	if !label(port) {
		ix.skip(what)
		return
	}
	protoName := "_" + strings.ToLower(string(proto)) + "." + host
	name := "_" + port + "." + protoName
	ix.names[protoName] = true
	ix.names[name] = true
	ix.srv[name] = append(ix.srv[name], t)
}

// skip records what, a service port (cluster/namespace/name:port) or a
// named service or endpoint, as left out.
func (ix *Index) skip(what string) { ix.skipped = append(ix.skipped, what) }

// label says whether s can be one label of a name as it is: lowercase
// letters, digits and '-', at most 63. Kubernetes allows no other service,
// namespace or port name; a lying apiserver's others are left out, never
// escaped into something that reads as another name.
func label(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func fqdn(z string) string { return strings.TrimSuffix(strings.ToLower(z), ".") + "." }

// zoneOf is the forward zone that name is in, "" when none is.
func (ix *Index) zoneOf(name string) string {
	for _, z := range ix.zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	return ""
}

// clusterOf is the cluster whose zone or service range name is in, ""
// when none is: what the query is counted under.
func (ix *Index) clusterOf(name string) string {
	if a, ok := reverseAddr(name); ok {
		for i, p := range ix.ranges {
			if p.Contains(a) {
				return ix.rangeOwner[i]
			}
		}
		return ""
	}
	return ix.owner[ix.zoneOf(name)]
}

// Skipped are how many service ports, named services and endpoints have a
// name that cannot be a DNS name, and the first few of them
// (cluster/namespace/name:port, sorted),
// at most limit: a hostile apiserver may send any number.
func (ix *Index) Skipped(limit int) (n int, first []string) {
	return len(ix.skipped), slices.Clone(ix.skipped[:min(limit, len(ix.skipped))])
}

// SameSkipped says whether ix and other skip the same ports, so that a
// change is logged once, not at every sync.
func (ix *Index) SameSkipped(other *Index) bool { return slices.Equal(ix.skipped, other.skipped) }

// Names is how many names with addresses or a CNAME the index answers
// (services, and a headless service's endpoints), for status.
func (ix *Index) Names() int { return len(ix.hosts) + len(ix.cname) }

// Zones are the forward zones answered, without the final dot.
func (ix *Index) Zones() []string {
	out := make([]string, len(ix.zones))
	for i, z := range ix.zones {
		out[i] = strings.TrimSuffix(z, ".")
	}
	slices.Sort(out)
	return out
}
