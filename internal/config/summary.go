package config

import (
	"fmt"
	"strings"
)

// Summary describes each cluster on one line, for check-config.
func (c *Config) Summary() []string {
	lines := make([]string, 0, len(c.Clusters))
	for _, cl := range c.Clusters {
		cidrs := make([]string, len(cl.ServiceCIDRs))
		for i, p := range cl.ServiceCIDRs {
			cidrs[i] = p.String()
		}
		line := fmt.Sprintf("cluster %q: kubeconfig %s (context %q, server %s), service_cidrs %s",
			cl.Name, cl.Kubeconfig, cl.ContextName, cl.Server, strings.Join(cidrs, ","))
		if cl.LocalServiceCIDR.IsValid() {
			line += fmt.Sprintf(", reached here at local_service_cidr %s", cl.LocalServiceCIDR)
		}
		lines = append(lines, line)
	}
	return lines
}
