package config

import "fmt"

// Per-cluster limits: what one cluster may make this host hold and
// program. Every Service and EndpointSlice comes from an apiserver this
// host does not control, so there is a bound on each, with defaults above
// what large clusters show one host; the model enforces them (its
// limits.go).
//
// The defaults. 1,000 endpoints per port is what Kubernetes itself hands
// to consumers of the Endpoints API, which truncates there
// (endpoints.kubernetes.io/over-capacity), and the most one EndpointSlice
// may hold: beyond it, more backends for one port from an outside host
// add rules, not capacity. 20,000 services and 200,000 endpoint entries
// are above what a large cluster shows one host (a 5,000-node cluster of
// the Kubernetes scalability tests has about 10,000 services), and keep
// one event's model work to a few milliseconds and the daemon's heap to
// a few hundred MB per cluster (see unitfile/kube-outpost.service).
const (
	DefaultMaxServices         = 20000
	DefaultMaxEndpointsPerPort = 1000
	DefaultMaxEndpoints        = 200000
)

// limitKeys are the limit keys, their defaults and the most they may be
// set to: past that, a limit bounds nothing the host could hold.
var limitKeys = []struct {
	key      string
	def, max int64
	set      func(*Cluster, int)
}{
	{"max_services", DefaultMaxServices, 1000000, func(c *Cluster, n int) { c.MaxServices = n }},
	{"max_endpoints_per_port", DefaultMaxEndpointsPerPort, 1000000, func(c *Cluster, n int) { c.MaxEndpointsPerPort = n }},
	{"max_endpoints", DefaultMaxEndpoints, 10000000, func(c *Cluster, n int) { c.MaxEndpoints = n }},
}

// limits checks max_services, max_endpoints_per_port and max_endpoints,
// positive integers. An absent one stays 0, which the model reads as its
// default (the same numbers, which a test pins).
func (c *checker) limits(cl *Cluster, who string, line func(string) int, raw rawCluster) {
	vals := map[string]any{"max_services": raw.MaxServices, "max_endpoints_per_port": raw.MaxEndpointsPerPort, "max_endpoints": raw.MaxEndpoints}
	for _, k := range limitKeys {
		v := vals[k.key]
		if v == nil {
			continue
		}
		n, ok := v.(int64)
		switch {
		case !ok:
			c.typeErr(line(k.key), who, k.key, fmt.Sprintf("an integer like %d", k.def), v)
		case n < 1 || n > k.max:
			c.add(line(k.key), who, "%s %d: must be 1 to %d (the default is %d)", k.key, n, k.max, k.def)
		default:
			k.set(cl, int(n))
		}
	}
}
