package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// NodeInfo is what reaching a cluster through its nodes needs of one Node:
// reach = "nodeport" sends to a node's address, reach = "routes" routes the
// node's pod CIDRs via it. A NodeInfo is never modified once published, so
// snapshots can be shared without copying.
type NodeInfo struct {
	Name string
	// Ready is the Ready condition being True. NotReady and Unknown (the
	// node controller's verdict on a kubelet that stopped reporting) are
	// both false: neither says the node forwards packets.
	Ready bool
	// Unschedulable is spec.unschedulable (cordoned). It is not a reason
	// to skip a node: a cordoned node still runs its pods and its
	// kube-proxy. It is kept for status output.
	Unschedulable bool
	// Addresses are the InternalIP and ExternalIP entries of
	// status.addresses that parse, in the Node's order (kubelet lists the
	// one it considers primary first).
	Addresses []NodeAddr
	// PodCIDRs are spec.podCIDRs (or the older spec.podCIDR) that parse as
	// network prefixes.
	PodCIDRs []netip.Prefix
}

// NodeAddr is one address of a node.
type NodeAddr struct {
	Type string // reach.NodeInternalIP or reach.NodeExternalIP
	Addr netip.Addr
}

func (a NodeAddr) String() string { return a.Type + " " + a.Addr.String() }

// Equal reports whether two NodeInfos are the same, so that a watcher can
// drop Node updates that change nothing reach cares about (most of them:
// kubelet rewrites conditions' heartbeat times).
func (n NodeInfo) Equal(o NodeInfo) bool {
	return n.Name == o.Name && n.Ready == o.Ready && n.Unschedulable == o.Unschedulable &&
		slices.Equal(n.Addresses, o.Addresses) && slices.Equal(n.PodCIDRs, o.PodCIDRs)
}

// NodeAddress picks the address of n to send to for one IP family: the first
// address of the first type in prefer (reach.DefaultNodeAddressTypes when empty)
// that is of that family and could be a destination at all. Types not in
// prefer are never used: an ExternalIP may cross a NAT or a metered link the
// operator did not choose.
func NodeAddress(n NodeInfo, prefer []string, v6 bool) (netip.Addr, bool) {
	if len(prefer) == 0 {
		prefer = reach.DefaultNodeAddressTypes
	}
	for _, typ := range prefer {
		for _, a := range n.Addresses {
			ip := a.Addr.Unmap()
			if a.Type == typ && ip.Is6() == v6 && unsafeEndpoint(ip) == "" && ip.Zone() == "" {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

// NoNodePortReason is NodePortEndpoints' reason for a service port without
// a nodePort: reach = "nodeport" cannot carry it, and status says so instead
// of the port silently black-holing.
const NoNodePortReason = "no NodePort: unreachable with reach = nodeport (the service needs type NodePort or LoadBalancer)"

// NodePortQuery is what NodePortEndpoints needs of one service port.
type NodePortQuery struct {
	// NodePort is the port's spec.ports[].nodePort; 0 when it has none.
	NodePort uint16
	// Nodes is the cluster's node list (a NodeWatcher snapshot).
	Nodes []NodeInfo
	// Prefer is the cluster's node_address_types.
	Prefer []string
	IPv6   bool
	// OnlyNodes, when not nil, are the only nodes that answer on the
	// NodePort: with externalTrafficPolicy: Local, the nodes that host a
	// ready endpoint of the service (its EndpointSlices' nodeName). Every
	// other node's kube-proxy drops such traffic, so sending there would
	// black-hole a share of the connections.
	OnlyNodes []string
	// Check, when not nil, refuses a node's chosen address as a DNAT
	// target, with the reason and its detail (the zero Exclusion when it
	// is fine): the store passes the check every endpoint gets
	// (targets.go), so that a Node cannot lead where an EndpointSlice
	// may not.
	Check func(node string, ip netip.Addr) (Exclusion, string)
}

// NodePortEndpoints is what reach = "nodeport" DNATs a service port to: the
// address of every Ready node (chosen by NodeAddress) that q.Check accepts,
// at the NodePort, sorted and without duplicates. Nodes left out that have an address are
// returned in excluded, for explain. When there is no endpoint, reason says
// why; the caller then rejects connections to the port, as for a service
// without endpoints.
func NodePortEndpoints(q NodePortQuery) (eps []Endpoint, excluded []ExcludedEndpoint, reason string) {
	if q.NodePort == 0 {
		return nil, nil, NoNodePortReason
	}
	prefer := q.Prefer
	if len(prefer) == 0 {
		prefer = reach.DefaultNodeAddressTypes
	}
	seen := map[netip.Addr]bool{}
	noAddr, notReady, filtered, refused := 0, 0, 0, 0
	for _, n := range q.Nodes {
		ip, ok := NodeAddress(n, prefer, q.IPv6)
		var r Exclusion
		var detail string
		if ok && q.Check != nil {
			r, detail = q.Check(n.Name, ip)
		}
		switch {
		case !ok:
			noAddr++
		case r != "":
			refused++
			excluded = append(excluded, ExcludedEndpoint{
				Address: ip.String(), Port: q.NodePort, Reason: r, Detail: fmt.Sprintf("node %s: %s", n.Name, detail),
			})
		case !n.Ready:
			notReady++
			excluded = append(excluded, ExcludedEndpoint{
				Address: ip.String(), Port: q.NodePort, Reason: ExcludedNotReady,
				Detail: fmt.Sprintf("node %s is not Ready", n.Name),
			})
		case q.OnlyNodes != nil && !slices.Contains(q.OnlyNodes, n.Name):
			filtered++
			excluded = append(excluded, ExcludedEndpoint{
				Address: ip.String(), Port: q.NodePort, Reason: ExcludedFiltered,
				Detail: fmt.Sprintf("externalTrafficPolicy: Local, and node %s has no ready endpoint of the service", n.Name),
			})
		case !seen[ip]:
			seen[ip] = true
			eps = append(eps, Endpoint{Addr: netip.AddrPortFrom(ip, q.NodePort)})
		}
	}
	slices.SortFunc(eps, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
	// Two nodes with one address (a misconfiguration): the address is
	// used, so listing it as left out too would contradict that.
	excluded = slices.DeleteFunc(excluded, func(e ExcludedEndpoint) bool {
		ip, err := netip.ParseAddr(e.Address)
		return err == nil && seen[ip]
	})
	excluded = sortExcluded(excluded)
	if len(eps) > 0 {
		return eps, excluded, ""
	}
	family := "IPv4"
	if q.IPv6 {
		family = "IPv6"
	}
	var why []string
	if len(q.Nodes) == 0 {
		why = append(why, "the cluster has no nodes")
	}
	if notReady > 0 {
		why = append(why, fmt.Sprintf("%d %s not Ready", notReady, plural(notReady, "node is", "nodes are")))
	}
	if filtered > 0 {
		why = append(why, fmt.Sprintf("%d %s no ready endpoint (externalTrafficPolicy: Local)", filtered, plural(filtered, "node has", "nodes have")))
	}
	if refused > 0 {
		why = append(why, fmt.Sprintf("%d %s refused", refused, plural(refused, "node's address is", "nodes' addresses are")))
	}
	if noAddr > 0 {
		why = append(why, fmt.Sprintf("%d %s no %s %s address", noAddr, plural(noAddr, "node has", "nodes have"),
			strings.Join(prefer, " or "), family))
	}
	return nil, excluded, "no node to send to with reach = nodeport: " + strings.Join(why, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
