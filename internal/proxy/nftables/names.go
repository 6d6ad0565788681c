package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TableName is the one table of ours in each family (ip, ip6). Nothing of
// ours is ever outside it, so cleanup is one delete per family.
const TableName = "kube-outpost"

// The fixed chains. The base chains only jump into regular chains, so that
// a listing shows the hooks apart from what they lead to.
const (
	chainNatOutput     = "nat-output"
	chainNatPrerouting = "nat-prerouting"
	chainNatPostrt     = "nat-postrouting"
	chainFilterOutput  = "filter-output"
	chainFilterForward = "filter-forward"
	chainFilterInput   = "filter-input"
	chainServices      = "services"
	chainRouted        = "routed"
	chainNodePorts     = "node-ports"
	chainRejectCheck   = "reject-check"
	chainReject        = "refuse" // not "reject": a keyword to nft
	chainMasquerading  = "masquerading"
	chainCanary        = "canary"
)

// Per-cluster and per-port object names are a prefix, the cluster's tag and,
// for a port's objects, a hash: names a cluster chose never reach the
// kernel as names, and the tag lets a full sync keep the objects of a
// cluster that has not synced yet. No prefix is the start of another.
const (
	prefixDispatch    = "ips-"  // map: address . protocol . port : goto service chain
	prefixNodePorts   = "nps-"  // map: protocol . node port : goto service chain
	prefixReject      = "rej-"  // set: address . protocol . port without endpoints
	prefixNodeReject  = "nrej-" // set: protocol . node port without endpoints
	prefixService     = "svc-"  // chain: mark, count, pick an endpoint
	prefixEndpoint    = "ep-"   // chain: remember the client, DNAT to one endpoint (ClientIP affinity)
	prefixCounter     = "cnt-"  // counter: new connections of one port
	prefixAffinity    = "aff-"  // set: clients of one endpoint (ClientIP affinity)
	tagLen            = 6
	portHashLen       = 16
	objectPrefixCount = 8
)

var objectPrefixes = [objectPrefixCount]string{prefixDispatch, prefixNodePorts, prefixReject, prefixNodeReject,
	prefixService, prefixEndpoint, prefixCounter, prefixAffinity}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(b32.EncodeToString(sum[:])[:n])
}

// clusterTags memoizes clusterTag: a sync asks for it once per port, and
// the clusters are the config's, a few names.
var clusterTags sync.Map

func clusterTag(cluster string) string {
	if t, ok := clusterTags.Load(cluster); ok {
		return t.(string)
	}
	t := hash("cluster/"+cluster, tagLen)
	clusterTags.Store(cluster, t)
	return t
}

func dispatchMap(cluster string) string   { return prefixDispatch + clusterTag(cluster) }
func nodePortMap(cluster string) string   { return prefixNodePorts + clusterTag(cluster) }
func rejectSet(cluster string) string     { return prefixReject + clusterTag(cluster) }
func nodeRejectSet(cluster string) string { return prefixNodeReject + clusterTag(cluster) }

func portHash(k model.PortKey) string {
	return clusterTag(k.Cluster) + "-" + hash(k.String(), portHashLen)
}

func serviceChain(k model.PortKey) string { return prefixService + portHash(k) }
func counterName(k model.PortKey) string  { return prefixCounter + portHash(k) }

func endpointChain(k model.PortKey, ep netip.AddrPort) string {
	return prefixEndpoint + clusterTag(k.Cluster) + "-" + hash(k.String()+"/"+ep.String(), portHashLen)
}

// affinitySet names the set of one endpoint's clients. The timeout is in
// the hash because a set's timeout cannot be changed in place: a new
// timeout is a new set, and the old one goes.
func affinitySet(k model.PortKey, ep netip.AddrPort, secs int64) string {
	return prefixAffinity + clusterTag(k.Cluster) + "-" + hash(fmt.Sprintf("%s/%s/%d", k, ep, secs), portHashLen)
}

// tagOf is the cluster tag an object name carries, "" for a fixed object.
func tagOf(name string) string {
	for _, p := range objectPrefixes {
		if strings.HasPrefix(name, p) && len(name) >= len(p)+tagLen {
			return name[len(p) : len(p)+tagLen]
		}
	}
	return ""
}

// family is what differs between the ip and the ip6 table.
type family struct {
	nft      knftables.Family
	ip       string // the address match keyword: ip or ip6
	addrType string // ipv4_addr or ipv6_addr
	loopback string
}

var (
	familyV4 = family{nft: knftables.IPv4Family, ip: "ip", addrType: "ipv4_addr", loopback: "127.0.0.0/8"}
	familyV6 = family{nft: knftables.IPv6Family, ip: "ip6", addrType: "ipv6_addr", loopback: "::1"}
)

func familyOf(ipv6 bool) family {
	if ipv6 {
		return familyV6
	}
	return familyV4
}

// MaxComment is the longest comment nft takes (128 bytes); a longer one
// fails the whole transaction, which carries every cluster.
const MaxComment = 128

const commentHashLen = 8

// comment makes s, which holds names a cluster chose and a hostile
// apiserver need not have validated, safe in an nft script: nft's quoted
// strings have no escapes, so a '"' would end the string and the rest
// would be parsed as syntax. Only a plain set of characters is kept, the
// others become '?'; then a text longer than MaxComment is cut and ends
// with "..." and a hash of the whole, so two long names stay apart.
func comment(s string) *string {
	t := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		case strings.ContainsRune(" -_./:()@,+=", r):
			return r
		}
		return '?'
	}, s)
	if len(t) > MaxComment {
		suffix := "..." + hash(s, commentHashLen)
		t = t[:MaxComment-len(suffix)] + suffix
	}
	return &t
}
