package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Chain layout, chosen for few chains and small incremental transactions:
//
//	nat    OUTPUT, PREROUTING -> OUTPOST-SERVICES -(service CIDR)-> OUTPOST-C-<cluster>
//	       OUTPOST-C-<cluster>: one rule per ClusterIP:port with endpoints -> OUTPOST-S-<cluster><port>
//	       OUTPOST-S-...: mark for masquerade, then the DNAT probability ladder
//	       POSTROUTING -> OUTPOST-POSTROUTING: masquerade what we marked
//	filter OUTPUT, FORWARD -> OUTPOST-FILTER -(service CIDR)-> OUTPOST-R-<cluster>
//	       OUTPOST-R-<cluster>: REJECT for each ClusterIP:port without endpoints
//
// The DNAT rules sit in the service chain itself (no per-endpoint chain as in
// kube-proxy): one chain per service port is what nf_tables-backed iptables
// pays for most. The cluster tag in every chain name lets a restarted daemon
// keep the chains of a cluster whose apiserver it cannot reach yet.
const (
	chainPrefix   = "OUTPOST-"
	chainServices = "OUTPOST-SERVICES"
	chainPostrt   = "OUTPOST-POSTROUTING"
	chainFilter   = "OUTPOST-FILTER"
	clusterPrefix = "OUTPOST-C-"
	rejectPrefix  = "OUTPOST-R-"
	servicePrefix = "OUTPOST-S-"
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
func serviceChain(k model.PortKey) string {
	return servicePrefix + clusterTag(k.Cluster) + hash(k.String(), 12)
}

// tagOf returns the cluster tag a per-cluster chain name carries, or "".
func tagOf(chain string) string {
	for _, p := range []string{clusterPrefix, rejectPrefix, servicePrefix} {
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

func comment(s string) string { return fmt.Sprintf("-m comment --comment %q", s) }

// portMatch matches packets to a service's ClusterIP:port.
func portMatch(p *model.ServicePort) string {
	pr := proto(p.Key.Protocol)
	return fmt.Sprintf("-d %s -p %s -m %s --dport %d", hostPrefix(p.ClusterIP), pr, pr, p.Port)
}

// dispatchRule is the OUTPOST-C rule for a port, without "-A chain".
func dispatchRule(p *model.ServicePort) string {
	return fmt.Sprintf("%s %s -j %s", portMatch(p), comment(p.Key.String()), serviceChain(p.Key))
}

// rejectRule is the OUTPOST-R rule for a port without endpoints: refuse fast
// instead of letting the client time out on a ClusterIP nobody answers.
func rejectRule(p *model.ServicePort) string {
	with := "icmp-port-unreachable"
	switch {
	case p.Key.Protocol == model.TCP:
		with = "tcp-reset"
	case p.Key.IPv6:
		with = "icmp6-port-unreachable"
	}
	return fmt.Sprintf("%s %s -j REJECT --reject-with %s", portMatch(p), comment(p.Key.String()+" has no endpoints"), with)
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
