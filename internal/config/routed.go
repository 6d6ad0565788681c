package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// routedClients checks routed_clients: the source ranges whose routed
// packets reach the clusters' services. Every range is a grant of this
// host's access to every cluster, so a range that means "anyone" is
// refused rather than taken at its word.
func (c *checker) routedClients(v any) []netip.Prefix {
	line := c.loc.line(-1, "routed_clients")
	list, ok := c.strings(line, "", "routed_clients", v)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for j, s := range list {
		p, err := parseCIDR(s)
		switch {
		case err != nil:
			c.add(line, "", "routed_clients[%d] %q: %v", j, s, err)
			continue
		case p.Bits() == 0:
			c.add(line, "", "routed_clients[%d] %q: every address: list the networks of the hosts that route through this one, like \"172.17.0.0/16\" for Docker's bridge", j, s)
			continue
		case p.Addr().IsMulticast():
			c.add(line, "", "routed_clients[%d] %q: a multicast range is no source of connections", j, s)
			continue
		}
		if slices.Contains(out, p) {
			c.add(line, "", "routed_clients[%d] %q: listed twice", j, s)
			continue
		}
		out = append(out, p)
	}
	return out
}

// RoutedSummary says, for check-config, whom the services are served to
// besides this host's own processes.
func (c *Config) RoutedSummary() string {
	if len(c.RoutedClients) == 0 {
		return "routed_clients: none; routed traffic is not served: only this host's own processes reach the services (node ports, where serve_node_ports is on, answer everyone)"
	}
	s := make([]string, len(c.RoutedClients))
	for i, p := range c.RoutedClients {
		s[i] = p.String()
	}
	return fmt.Sprintf("routed_clients: the services are also served to hosts routed through this one from %s", strings.Join(s, ", "))
}
