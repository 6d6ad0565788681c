package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// overlaps refuses two clusters whose ClusterIPs would land in the same
// range on this host: a ClusterIP must say which cluster it belongs to.
func (c *checker) overlaps() {
	for a, x := range c.cidrs {
		if x.replaced {
			continue
		}
		for _, y := range c.cidrs[:a] {
			if y.replaced || y.cluster == x.cluster || !x.prefix.Overlaps(y.prefix) {
				continue
			}
			hint := ""
			if x.key != "local_service_cidr" && y.key != "local_service_cidr" {
				hint = ": two clusters cannot share ClusterIPs on one host; set local_service_cidr on one of them to reach its ClusterIPs at a range of this host's own"
			}
			c.add(x.line, x.who, "%s %s overlaps %s %s %s (line %d)%s", x.key, x.prefix, y.who, y.key, y.prefix, y.line, hint)
		}
	}
}

// localServiceCIDR checks local_service_cidr: a range of the same size as
// the cluster's one service range of that family, whose ClusterIPs it then
// stands for.
func (c *checker) localServiceCIDR(i int, cl *Cluster, who string, line int, v any) {
	s, ok := c.str(line, who, "local_service_cidr", v, "a CIDR string")
	if !ok {
		return
	}
	p, err := parseCIDR(s)
	if err != nil {
		c.add(line, who, "local_service_cidr %q: %v", s, err)
		return
	}
	var same []netip.Prefix
	for _, sc := range cl.ServiceCIDRs {
		if sc.Addr().Is4() == p.Addr().Is4() {
			same = append(same, sc)
		}
	}
	family := "IPv4"
	if p.Addr().Is6() {
		family = "IPv6"
	}
	switch {
	case len(cl.ServiceCIDRs) == 0:
		return // already reported
	case len(same) != 1:
		c.add(line, who, "local_service_cidr %s: the cluster must have exactly one %s service_cidrs entry to map from, it has %d", p, family, len(same))
		return
	case same[0].Bits() != p.Bits():
		c.add(line, who, "local_service_cidr %s: must be the size of service_cidrs %s (/%d), so that every ClusterIP has its local address", p, same[0], same[0].Bits())
		return
	}
	cl.LocalServiceCIDR = p
	for k := range c.cidrs {
		if c.cidrs[k].cluster == i && c.cidrs[k].prefix == same[0] {
			c.cidrs[k].replaced = true
		}
	}
	c.cidrs = append(c.cidrs, seenCIDR{cluster: i, who: who, key: "local_service_cidr", prefix: p, line: line})
}

// selection checks namespaces, exclude_namespaces and service_selector.
func (c *checker) selection(cl *Cluster, who string, line func(string) int, raw rawCluster) {
	cl.Namespaces = c.namespaceList(line("namespaces"), who, "namespaces", raw.Namespaces)
	cl.ExcludeNamespaces = c.namespaceList(line("exclude_namespaces"), who, "exclude_namespaces", raw.ExcludeNamespaces)
	if len(cl.Namespaces) > 0 && len(cl.ExcludeNamespaces) > 0 {
		c.add(line("exclude_namespaces"), who, "set namespaces or exclude_namespaces, not both: with namespaces, every other namespace is left out already")
	}
	if s, ok := c.str(line("service_selector"), who, "service_selector", raw.ServiceSelector, "a label selector string"); ok {
		if _, err := labels.Parse(s); err != nil {
			c.add(line("service_selector"), who, "service_selector %q: %v", s, err)
		} else {
			cl.ServiceSelector = s
		}
	}
}

func (c *checker) namespaceList(line int, who, key string, v any) []string {
	list, ok := c.strings(line, who, key, v)
	if !ok {
		return nil
	}
	var out []string
	for j, ns := range list {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			c.add(line, who, "%s[%d] %q: not a namespace name: %s", key, j, ns, strings.Join(errs, "; "))
			continue
		}
		if slices.Contains(out, ns) {
			c.add(line, who, "%s[%d] %q: listed twice", key, j, ns)
			continue
		}
		out = append(out, ns)
	}
	return out
}

// reach checks reach, node_address_types, pod_cidrs and serve_node_ports.
func (c *checker) reach(cl *Cluster, who string, line func(string) int, raw rawCluster) {
	cl.Reach = reach.Direct
	reachOK := raw.Reach == nil
	if s, ok := c.str(line("reach"), who, "reach", raw.Reach, "a string"); ok {
		switch r := reach.Kind(s); r {
		case reach.Direct, reach.NodePort, reach.Routes:
			cl.Reach, reachOK = r, true
		default:
			c.add(line("reach"), who, "reach %q: must be direct, nodeport or routes", s)
		}
	}
	c.podCIDRs(cl, who, line, raw, reachOK)
	cl.NodeAddressTypes = slices.Clone(reach.DefaultNodeAddressTypes)
	if list, ok := c.strings(line("node_address_types"), who, "node_address_types", raw.NodeAddressTypes); ok {
		if len(list) == 0 {
			c.add(line("node_address_types"), who, "node_address_types is empty: no node address would be used")
		}
		var out []string
		for j, t := range list {
			if !slices.Contains(reach.NodeAddressTypes, t) || slices.Contains(out, t) {
				c.add(line("node_address_types"), who, "node_address_types[%d] %q: must be one of %s, each once", j, t, strings.Join(reach.NodeAddressTypes, ", "))
				continue
			}
			out = append(out, t)
		}
		if len(out) > 0 {
			cl.NodeAddressTypes = out
		}
		if cl.Reach == reach.Direct && raw.Reach != nil {
			c.add(line("node_address_types"), who, "node_address_types is only used with reach = \"nodeport\" or \"routes\"")
		}
	}
	if raw.ServeNodePorts != nil {
		if b, ok := raw.ServeNodePorts.(bool); ok {
			cl.ServeNodePorts = b
		} else {
			c.typeErr(line("serve_node_ports"), who, "serve_node_ports", "true or false", raw.ServeNodePorts)
		}
	}
}

// cidrList checks an optional array of CIDR strings.
func (c *checker) cidrList(line int, who, key string, v any) []netip.Prefix {
	list, ok := c.strings(line, who, key, v)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for j, s := range list {
		p, err := parseCIDR(s)
		if err != nil {
			c.add(line, who, "%s[%d] %q: %v", key, j, s, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// strings returns v if it is an array of strings; it reports anything else.
// An absent value gives ok == false silently.
func (c *checker) strings(line int, who, key string, v any) ([]string, bool) {
	if v == nil {
		return nil, false
	}
	list, ok := v.([]any)
	if !ok {
		c.typeErr(line, who, key, "an array of strings", v)
		return nil, false
	}
	out := make([]string, 0, len(list))
	for j, e := range list {
		s, ok := e.(string)
		if !ok {
			c.typeErr(line, who, fmt.Sprintf("%s[%d]", key, j), "a string", e)
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// nodePortsNeedMasquerade refuses serve_node_ports with masquerade = false:
// a client that reaches a node port of this host is not routed back
// through it by the pod, so without source NAT the pod's reply goes to
// the client directly, from an address the client never dialed, and the
// connection fails.
func (c *checker) nodePortsNeedMasquerade(cfg *Config) {
	if cfg.Masquerade {
		return
	}
	for i, cl := range cfg.Clusters {
		if !cl.ServeNodePorts {
			continue
		}
		who := fmt.Sprintf("clusters[%d]", i)
		if cl.Name != "" {
			who = fmt.Sprintf("cluster %q", cl.Name)
		}
		c.add(c.loc.line(i, "clusters.serve_node_ports"), who, "serve_node_ports needs masquerade = true (line %d): "+
			"replies to a client of a node port would not come back through this host", c.loc.line(-1, "masquerade"))
	}
}

// kubeconfig fills cl.ContextName and cl.Server from cl's kubeconfig.
func (c *checker) kubeconfig(cl *Cluster, who string, line func(string) int) {
	kc, err := clientcmd.LoadFromFile(cl.Kubeconfig)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) { // the message already names the path
			c.add(line("kubeconfig"), who, "kubeconfig %s: %v", cl.Kubeconfig, pe.Err)
		} else {
			c.add(line("kubeconfig"), who, "kubeconfig %s: not a valid kubeconfig: %v", cl.Kubeconfig, err)
		}
		return
	}
	have := strings.Join(slices.Sorted(maps.Keys(kc.Contexts)), ", ")
	if have == "" {
		have = "none"
	}

	name, what, at := cl.Context, "context", line("context")
	if name == "" {
		name, what, at = kc.CurrentContext, "current-context", line("kubeconfig")
		if name == "" {
			c.add(at, who, "kubeconfig %s: no current-context, so set context (have: %s)", cl.Kubeconfig, have)
			return
		}
	}
	ctx := kc.Contexts[name]
	if ctx == nil {
		c.add(at, who, "kubeconfig %s: %s %q not found (have: %s)", cl.Kubeconfig, what, name, have)
		return
	}
	server := kc.Clusters[ctx.Cluster]
	if server == nil || server.Server == "" {
		c.add(at, who, "kubeconfig %s: context %q: cluster %q has no server", cl.Kubeconfig, name, ctx.Cluster)
		return
	}
	cl.ContextName, cl.Server = name, server.Server
	if user := kc.AuthInfos[ctx.AuthInfo]; user != nil {
		for _, problem := range credentialProblems(cl.Kubeconfig, ctx.AuthInfo, user, time.Now()) {
			c.add(at, who, "%s", problem)
		}
	}
}

// serviceCIDRs checks the CIDRs of clusters[i]; overlaps checks them
// against the other clusters' once all are known.
func (c *checker) serviceCIDRs(i int, who string, line int, v any) []netip.Prefix {
	if v == nil {
		c.add(line, who, `service_cidrs is required: the cluster's Service IP ranges, like ["10.96.0.0/12"]`)
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		c.typeErr(line, who, "service_cidrs", "an array of CIDR strings", v)
		return nil
	}
	if len(list) == 0 {
		c.add(line, who, "service_cidrs is empty: no ClusterIP would be reachable")
	}
	var out []netip.Prefix
	for j, e := range list {
		s, ok := e.(string)
		if !ok {
			c.typeErr(line, who, fmt.Sprintf("service_cidrs[%d]", j), "a string", e)
			continue
		}
		p, err := parseCIDR(s)
		if err != nil {
			c.add(line, who, "service_cidrs[%d] %q: %v", j, s, err)
			continue
		}
		c.cidrs = append(c.cidrs, seenCIDR{cluster: i, who: who, key: fmt.Sprintf("service_cidrs[%d]", j), prefix: p, line: line})
		out = append(out, p)
	}
	return out
}
