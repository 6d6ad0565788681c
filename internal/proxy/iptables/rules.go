package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Chain layout, chosen for few chains and small incremental transactions:
//
//	nat    OUTPUT -> OUTPOST-SERVICES -(service CIDR)-> OUTPOST-C-<cluster>
//	       PREROUTING -> OUTPOST-PREROUTING -(routed_clients source)-> OUTPOST-SERVICES
//	       OUTPOST-C-<cluster>: one rule per ClusterIP:port with endpoints -> OUTPOST-S-<cluster><port>
//	       OUTPOST-S-...: mark for masquerade, then the DNAT probability ladder
//	       POSTROUTING -> OUTPOST-POSTROUTING: masquerade what we marked
//	filter OUTPUT -> OUTPOST-FILTER -(service CIDR)-> OUTPOST-R-<cluster>
//	       FORWARD -> OUTPOST-FORWARD -(routed_clients source)-> OUTPOST-FILTER
//	       OUTPOST-R-<cluster>: REJECT for each ClusterIP:port without endpoints
//
// Routed packets are served only from the routed_clients ranges: on a host
// with ip_forward on (every Docker host), anyone who routes through it
// would otherwise reach every cluster as this host. Packets from elsewhere
// are neither DNATed nor refused by us: they go where routing sends them,
// as if kube-outpost were not there, except at node ports (below).
//
// A cluster's VIPs are in its service CIDRs, or in its local_service_cidr
// for the one that maps. External IPs are outside them, so they have
// chains of their own, entered for the cluster's allow_external_ips
// ranges, with the same kind of rules leading to the same service chains:
//
//	nat    OUTPOST-SERVICES -(allowed range)-> OUTPOST-X-<cluster> -> OUTPOST-S-...
//	filter OUTPOST-FILTER -(allowed range)-> OUTPOST-XR-<cluster>: REJECT
//
// A cluster with serve_node_ports has its served node ports answered at
// this host's own addresses, non-loopback ones only (no route_localnet,
// CVE-2020-8558), for routed packets and local processes alike, after
// every range above, and refused in filter INPUT (packets to this host)
// and OUTPUT when they have no endpoints. Only new connections are
// refused: a reply to a connection of this host's own from a local port
// that happens to be a node port must pass. Node ports answer every
// client that reaches this host, in routed_clients or not: OUTPOST-PREROUTING
// has the same node port rules after its routed_clients rules.
//
//	nat    OUTPOST-SERVICES, OUTPOST-PREROUTING -(local address, not loopback)-> OUTPOST-N-<cluster>
//	       OUTPOST-N-<cluster>: one rule per served node port -> OUTPOST-S-...
//	filter INPUT -> OUTPOST-FILTER -(local, not loopback, NEW)-> OUTPOST-NR-<cluster>: REJECT
//
// Node port traffic is always masqueraded: the service chain marks every
// connection it handles, and a client that dialed this host would not get
// the pod's replies otherwise. Without a masquerade mark no node port is
// served (config refuses serve_node_ports with masquerade = false).
//
// The DNAT rules sit in the service chain itself (no per-endpoint chain as in
// kube-proxy): one chain per service port is what nf_tables-backed iptables
// pays for most. The cluster tag in every chain name lets a restarted daemon
// keep the chains of a cluster whose apiserver it cannot reach yet.
const (
	chainPrefix   = "OUTPOST-"
	chainServices = "OUTPOST-SERVICES"
	chainRouted   = "OUTPOST-PREROUTING"
	chainPostrt   = "OUTPOST-POSTROUTING"
	chainFilter   = "OUTPOST-FILTER"
	chainForward  = "OUTPOST-FORWARD"
	chainCanary   = "OUTPOST-CANARY" // canary.go
	clusterPrefix = "OUTPOST-C-"
	rejectPrefix  = "OUTPOST-R-"
	servicePrefix = "OUTPOST-S-"
	extPrefix     = "OUTPOST-X-"
	extRejPrefix  = "OUTPOST-XR-"
	nodePrefix    = "OUTPOST-N-"
	nodeRejPrefix = "OUTPOST-NR-"
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return b32.EncodeToString(sum[:])[:n]
}

// clusterTag is 6 characters, so that a service chain name fits in the 28
// characters iptables allows: OUTPOST-S- + 6 + 12.
func clusterTag(cluster string) string { return hash("cluster/"+cluster, 6) }

func clusterChain(cluster string) string { return clusterPrefix + clusterTag(cluster) }
func rejectChain(cluster string) string  { return rejectPrefix + clusterTag(cluster) }
func extChain(cluster string) string     { return extPrefix + clusterTag(cluster) }
func extRejChain(cluster string) string  { return extRejPrefix + clusterTag(cluster) }
func nodeChain(cluster string) string    { return nodePrefix + clusterTag(cluster) }
func nodeRejChain(cluster string) string { return nodeRejPrefix + clusterTag(cluster) }
func serviceChain(k model.PortKey) string {
	return servicePrefix + clusterTag(k.Cluster) + hash(k.String(), 12)
}

// tagOf returns the cluster tag a per-cluster chain name carries, or "".
func tagOf(chain string) string {
	for _, p := range []string{clusterPrefix, rejectPrefix, servicePrefix, extPrefix, extRejPrefix, nodePrefix, nodeRejPrefix} {
		if strings.HasPrefix(chain, p) && len(chain) >= len(p)+6 {
			return chain[len(p) : len(p)+6]
		}
	}
	return ""
}

// recentName names the xt_recent list that remembers which clients went to
// one endpoint of one service port (session affinity).
func recentName(chain string, ep netip.AddrPort) string {
	return "OUTPOST-" + hash(chain+"/"+ep.String(), 16)
}

func proto(p model.Protocol) string { return strings.ToLower(string(p)) }

func hostPrefix(ip netip.Addr) string { return netip.PrefixFrom(ip, ip.BitLen()).String() }

func comment(s string) string { return Comment(s) }

// MaxComment is the longest comment the kernel keeps (xt_comment: 256
// bytes with the NUL). iptables 1.8.9 cuts a longer one silently, older
// versions refuse the rule, and with it the whole restore, which carries
// every cluster.
const MaxComment = 255

// commentHashLen is how much of a hash of the whole text a cut comment
// ends with, so that two long names that share their first 240 bytes
// still make two comments.
const commentHashLen = 8

// Comment is the comment match of a rule. Its text holds names a cluster
// chose, which a hostile apiserver need not have validated, so it is made
// what iptables-restore reads back as written: a character that is not
// printable becomes '?' (quoted, iptables-restore reads \x1b as "x1b" and
// \n as "n", so %q alone is safe but not faithful, and a byte would turn
// into three); then a text longer than MaxComment bytes is cut on a UTF-8
// boundary and ends with "..." and a hash of the whole. Quoting with %q
// escapes only '"' and '\\' then, which iptables-restore unescapes.
func Comment(s string) string { return fmt.Sprintf("-m comment --comment %q", commentText(s)) }

func commentText(s string) string {
	t := strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	if len(t) <= MaxComment {
		return t
	}
	suffix := "..." + hash(s, commentHashLen)
	cut := MaxComment - len(suffix)
	for !utf8.RuneStart(t[cut]) {
		cut--
	}
	return t[:cut] + suffix
}

// portMatch matches packets to addr at a service's port: its VIP (the
// ClusterIP, or its local mapping) or one of its external IPs.
func portMatch(p *model.ServicePort, addr netip.Addr) string {
	pr := proto(p.Key.Protocol)
	return fmt.Sprintf("-d %s -p %s -m %s --dport %d", hostPrefix(addr), pr, pr, p.Port)
}

// dispatchRule is the OUTPOST-C rule for a port, without "-A chain".
func dispatchRule(p *model.ServicePort) string {
	return fmt.Sprintf("%s %s -j %s", portMatch(p, p.VIP()), comment(p.Key.String()), serviceChain(p.Key))
}

// extDispatchRules are the OUTPOST-X rules for a port's external IPs.
func extDispatchRules(p *model.ServicePort) []string {
	var out []string
	for _, ip := range p.ExternalIPs {
		out = append(out, fmt.Sprintf("%s %s -j %s", portMatch(p, ip), comment(p.Key.String()+" external IP"), serviceChain(p.Key)))
	}
	return out
}

// rejectRule is the OUTPOST-R rule for a port without endpoints: refuse fast
// instead of letting the client time out on a ClusterIP nobody answers.
func rejectRule(p *model.ServicePort) string { return rejectAt(p, p.VIP()) }

// extRejectRules are the OUTPOST-XR rules for the external IPs of a port
// without endpoints.
func extRejectRules(p *model.ServicePort) []string {
	var out []string
	for _, ip := range p.ExternalIPs {
		out = append(out, rejectAt(p, ip))
	}
	return out
}

func rejectAt(p *model.ServicePort, addr netip.Addr) string {
	return fmt.Sprintf("%s %s -j REJECT --reject-with %s", portMatch(p, addr), comment(p.Key.String()+" has no endpoints"), rejectWith(p))
}

func rejectWith(p *model.ServicePort) string {
	switch {
	case p.Key.Protocol == model.TCP:
		return "tcp-reset"
	case p.Key.IPv6:
		return "icmp6-port-unreachable"
	}
	return "icmp-port-unreachable"
}

// nodePortMatch matches packets at a port's served node port; the
// OUTPOST-SERVICES and OUTPOST-FILTER rules that lead there match the
// addresses.
func nodePortMatch(p *model.ServicePort) string {
	pr := proto(p.Key.Protocol)
	return fmt.Sprintf("-p %s -m %s --dport %d", pr, pr, p.ServedNodePort)
}

// nodeDispatchRule is the OUTPOST-N rule for a served node port with
// endpoints.
func nodeDispatchRule(p *model.ServicePort) string {
	return fmt.Sprintf("%s %s -j %s", nodePortMatch(p), comment(p.Key.String()+" node port"), serviceChain(p.Key))
}

// nodeRejectRule is the OUTPOST-NR rule for a served node port without
// endpoints.
func nodeRejectRule(p *model.ServicePort) string {
	return fmt.Sprintf("%s %s -j REJECT --reject-with %s", nodePortMatch(p), comment(p.Key.String()+" node port has no endpoints"), rejectWith(p))
}

// notLoopback is the match that keeps node ports off the loopback range.
func notLoopback(ipv6 bool) string {
	if ipv6 {
		return "! -d ::1/128"
	}
	return "! -d 127.0.0.0/8"
}

// serviceRules are the rules of a port's OUTPOST-S chain, without
// "-A chain".
func serviceRules(p *model.ServicePort, masqMark uint32) []string {
	chain := serviceChain(p.Key)
	pr := proto(p.Key.Protocol)
	var out []string
	if masqMark != 0 {
		out = append(out, fmt.Sprintf("-j MARK --or-mark %#x", masqMark))
	}
	n := len(p.Endpoints)
	secs := int64(p.Affinity.Seconds())
	if secs > 0 {
		// A client seen recently goes back to its endpoint, and the visit
		// refreshes the timer (ClientIP affinity, as kube-proxy does it).
		for _, ep := range p.Endpoints {
			out = append(out, fmt.Sprintf("-p %s -m recent --name %s --update --seconds %d --reap --rsource -j DNAT --to-destination %s",
				pr, recentName(chain, ep.Addr), secs, ep.Addr))
		}
	}
	for i, ep := range p.Endpoints {
		var b strings.Builder
		fmt.Fprintf(&b, "-p %s", pr)
		if i < n-1 {
			// Each rule takes 1/(remaining) of what reaches it: equal shares.
			fmt.Fprintf(&b, " -m statistic --mode random --probability %s", probability(n-i))
		}
		if secs > 0 {
			fmt.Fprintf(&b, " -m recent --name %s --set --rsource", recentName(chain, ep.Addr))
		}
		fmt.Fprintf(&b, " -j DNAT --to-destination %s", ep.Addr)
		out = append(out, b.String())
	}
	return out
}

func probability(n int) string { return strconv.FormatFloat(1/float64(n), 'f', 10, 64) }
