package config

import (
	"cmp"
	"errors"
	"fmt"
)

// EndpointEntries is the sum of the clusters' max_endpoints, a cluster
// without the key counting its default: the most endpoint entries all
// clusters together may hand the datapath.
func (c *Config) EndpointEntries() int {
	n := 0
	for _, cl := range c.Clusters {
		n += cmp.Or(cl.MaxEndpoints, DefaultMaxEndpoints)
	}
	return n
}

// boundProblem is a limit that lets a cluster hand a mode more than it
// holds: the cluster (its index) and the key to change.
type boundProblem struct {
	cluster  int
	who, key string
	msg      string
}

// overBounds lists the limits of c that let the clusters hand mode, bounded
// by b, more than it holds.
func (c *Config) overBounds(mode Mode, b Bounds) []boundProblem {
	var out []boundProblem
	sum := 0
	for i, cl := range c.Clusters {
		who := fmt.Sprintf("cluster %q", cl.Name)
		if per := cmp.Or(cl.MaxEndpointsPerPort, DefaultMaxEndpointsPerPort); b.EndpointsPerPort > 0 && per > b.EndpointsPerPort {
			out = append(out, boundProblem{i, who, "max_endpoints_per_port",
				fmt.Sprintf("max_endpoints_per_port %d: mode %q holds at most %d endpoints per service port", per, mode, b.EndpointsPerPort)})
		}
		sum += cmp.Or(cl.MaxEndpoints, DefaultMaxEndpoints)
	}
	if last := len(c.Clusters) - 1; b.Endpoints > 0 && sum > b.Endpoints {
		out = append(out, boundProblem{last, fmt.Sprintf("cluster %q", c.Clusters[last].Name), "max_endpoints",
			fmt.Sprintf("max_endpoints: the clusters' max_endpoints add up to %d (a cluster without the key counts %d), "+
				"more than mode %q holds (%d endpoint entries of all clusters together): lower them", sum, DefaultMaxEndpoints, mode, b.Endpoints)})
	}
	return out
}

// Fits says why the clusters' limits would let them hand mode, bounded by
// b, more than it holds; nil when they cannot. mode = "auto" passes over
// such a mode (proxy.Resolve).
func (c *Config) Fits(mode Mode, b Bounds) error {
	var errs []error
	for _, p := range c.overBounds(mode, b) {
		errs = append(errs, fmt.Errorf("%s: %s", p.who, p.msg))
	}
	return errors.Join(errs...)
}

// bounds refuses limits that let the clusters hand the configured mode
// more than its objects hold, naming the key: the alternative is a sync
// that fails for every cluster once one of them fills the objects.
func (c *checker) bounds(cfg *Config) {
	if cfg.Mode == ModeAuto {
		return
	}
	for _, p := range cfg.overBounds(cfg.Mode, modeBounds(cfg.Mode)) {
		c.add(c.loc.line(p.cluster, "clusters."+p.key), p.who, "%s", p.msg)
	}
}
