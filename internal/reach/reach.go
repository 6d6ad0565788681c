// Package reach is the vocabulary of how this host reaches a cluster's
// endpoints: the reach kinds and the node address types. config reads
// them from the file and model acts on them; both import this package and
// neither the other, so the model never depends on config loading.
package reach

// Kind is how packets reach a cluster's endpoints from this host.
type Kind string

const (
	// Direct DNATs to the endpoint IPs: the network routes pod IPs. ""
	// counts as it.
	Direct Kind = "direct"
	// NodePort DNATs a service port to <node address>:<nodePort>.
	NodePort Kind = "nodeport"
	// Routes installs a route per node podCIDR via the node (package
	// routes), then DNATs to the endpoint IPs like Direct.
	Routes Kind = "routes"
)

// ThroughNodes reports whether a cluster of this kind is reached through
// its nodes: it needs the node list (and the node RBAC,
// packaging/rbac-nodes.yaml) before its desired state is complete.
func (k Kind) ThroughNodes() bool { return k == NodePort || k == Routes }

// Node address types, as in a Node's status.addresses. Only these two are
// addresses a host outside the cluster can send to: Hostname and the DNS
// types would need a resolver at sync time.
const (
	NodeInternalIP = "InternalIP"
	NodeExternalIP = "ExternalIP"
)

// NodeAddressTypes are the node address types a cluster may prefer
// (node_address_types).
var NodeAddressTypes = []string{NodeInternalIP, NodeExternalIP}

// DefaultNodeAddressTypes is the preference when a cluster configures none:
// the address kubelet reports first on every provider, and the one the
// nodes' own kube-proxies answer NodePorts on.
var DefaultNodeAddressTypes = []string{NodeInternalIP}
