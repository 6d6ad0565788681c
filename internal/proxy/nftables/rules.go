package nftables

import (
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Table layout, the same in the ip and the ip6 table (docs/datapaths.md
// has it with the hook priorities and why):
//
//	nat-output (nat, output)          -> services
//	nat-prerouting (nat, prerouting)  -> routed: routed_clients sources -> services; everyone -> node-ports
//	services: per cluster range and allowed external IP range:
//	          daddr . l4proto . dport vmap @ips-<cluster> -> svc-<port>
//	          then -> node-ports
//	node-ports: per cluster serving them, to a local non-loopback address:
//	          l4proto . dport vmap @nps-<cluster> -> svc-<port>
//	svc-<port>: mark for masquerade, count (named counter cnt-<port>),
//	          per endpoint i of N: numgen random mod N-i 0 dnat to endpoint i
//	          (the last without numgen); with ClientIP affinity instead
//	          saddr @aff-<endpoint> -> ep-<endpoint>, then per endpoint
//	          numgen random mod N-i 0 goto ep-<endpoint i>
//	ep-<endpoint>: remember the client (affinity only), DNAT
//	nat-postrouting (nat, postrouting) -> masquerading: what we marked
//	filter-output, filter-input (node ports only), filter-forward
//	          (routed_clients only) -> reject-check:
//	          daddr . l4proto . dport @rej-<cluster> -> reject
//	          new connections to a local address: l4proto . dport @nrej-<cluster> -> reject
//
// These are the features of iptables mode (see its rules.go) in the same
// model terms: a cluster's VIPs are in its ranges (Ranges(), with the
// local_service_cidr mapping), its external IPs only in its
// allow_external_ips ranges; node ports are answered at this host's own
// non-loopback addresses for everyone, and masqueraded; routed packets
// reach the services only from routed_clients, and packets from
// elsewhere go where routing sends them. The first packet's cost does
// not grow with the number of services: one map lookup per cluster range.
//
// Per cluster maps and sets, rather than one for all, let a cluster that
// has not synced keep its elements while a full sync rewrites the others,
// and make a range decide which cluster a packet is looked up in, as the
// iptables chains do.

// nodePortRule is the match of node port traffic: this host's own
// addresses, never loopback (no route_localnet, CVE-2020-8558).
func (f family) localNotLoopback() string {
	return fmt.Sprintf("fib daddr type local %s daddr != %s", f.ip, f.loopback)
}

// rendered is what one service port puts in the table.
type rendered struct {
	port *model.ServicePort
	// chains are the port's service chain and, with ClientIP affinity,
	// its endpoint chains, with a digest of their rules; none without
	// endpoints.
	chains map[string]uint64
	// rules are the chains' rules, kept only until the sync that
	// rendered them wrote them: held for every port between syncs, the
	// text would be most of the process's heap, and a digest is enough
	// to know whether a chain changed.
	rules map[string][]string
	// affinity are its affinity sets, with their timeouts in seconds.
	affinity map[string]int64
	// elems are its elements in the cluster's maps and sets.
	elems []elem
}

// elem is one element of a map or set of ours.
type elem struct {
	set   string // the map or set
	isMap bool
	key   []string
	value string // the verdict, for a map
	text  string // the comment
}

// id identifies the element in its map or set.
func (e elem) id() string { return e.set + "\x00" + strings.Join(e.key, " . ") }

func (e elem) object() *knftables.Element {
	el := &knftables.Element{Key: e.key, Comment: comment(e.text)}
	if e.isMap {
		el.Map, el.Value = e.set, []string{e.value}
	} else {
		el.Set = e.set
	}
	return el
}

func proto(p model.Protocol) string { return strings.ToLower(string(p)) }

// renderPort is everything of one port; serveNP says whether its cluster
// serves node ports here.
func renderPort(f family, p *model.ServicePort, serveNP bool, masqMark uint32) *rendered {
	r := &rendered{port: p, chains: map[string]uint64{}, rules: map[string][]string{}, affinity: map[string]int64{}}
	k := p.Key
	pr, port := proto(k.Protocol), strconv.Itoa(int(p.Port))
	name := k.String()
	if len(p.Endpoints) == 0 {
		r.elems = append(r.elems, elem{set: rejectSet(k.Cluster), key: []string{p.VIP().String(), pr, port}, text: name + " has no endpoints"})
		for _, ip := range p.ExternalIPs {
			r.elems = append(r.elems, elem{set: rejectSet(k.Cluster), key: []string{ip.String(), pr, port}, text: name + " external IP has no endpoints"})
		}
		if serveNP && p.ServedNodePort != 0 {
			r.elems = append(r.elems, elem{set: nodeRejectSet(k.Cluster), key: []string{pr, strconv.Itoa(int(p.ServedNodePort))},
				text: name + " node port has no endpoints"})
		}
		return r
	}
	svc := serviceChain(k)
	goSvc := "goto " + svc
	r.elems = append(r.elems, elem{set: dispatchMap(k.Cluster), isMap: true, key: []string{p.VIP().String(), pr, port}, value: goSvc, text: name})
	for _, ip := range p.ExternalIPs {
		r.elems = append(r.elems, elem{set: dispatchMap(k.Cluster), isMap: true, key: []string{ip.String(), pr, port}, value: goSvc, text: name + " external IP"})
	}
	if serveNP && p.ServedNodePort != 0 {
		r.elems = append(r.elems, elem{set: nodePortMap(k.Cluster), isMap: true, key: []string{pr, strconv.Itoa(int(p.ServedNodePort))},
			value: goSvc, text: name + " node port"})
	}
	// The nat chains see only the first packet of a connection: the
	// counter counts new connections. One rule for both: nft's time
	// grows with the number of rules it is given.
	count := fmt.Sprintf("counter name %q", counterName(k))
	if masqMark != 0 {
		count = fmt.Sprintf("meta mark set meta mark | %#x %s", masqMark, count)
	}
	rules := []string{count}
	secs := int64(p.Affinity.Seconds())
	n := len(p.Endpoints)
	var picks []string
	for i, ep := range p.Endpoints {
		// Endpoint i is picked with probability 1/(n-i) among those
		// left, 1/n in all; the last takes what is left. A rule per
		// endpoint rather than one numgen lookup in a map: the kernel
		// binds an anonymous map by walking the whole transaction and
		// looks a named one up by walking every set of the table, so
		// either made a full sync quadratic in the number of services
		// (docs/benchmarks.md). The price: a new connection meets up
		// to n of these rules, as in iptables mode.
		pick := ""
		if n-i > 1 {
			pick = fmt.Sprintf("numgen random mod %d 0 ", n-i)
		}
		dnat := fmt.Sprintf("meta l4proto %s dnat to %s", pr, ep.Addr)
		if secs == 0 {
			// No chain per endpoint: the table stays small for
			// nft to read before every transaction.
			picks = append(picks, pick+dnat)
			continue
		}
		// ClientIP affinity needs a chain per endpoint: the client is
		// remembered in the set of the endpoint it was sent to. A
		// client seen recently goes back there; the visit refreshes
		// the timer (as kube-proxy does it).
		epChain := endpointChain(k, ep.Addr)
		aff := affinitySet(k, ep.Addr, secs)
		r.affinity[aff] = secs
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", f.ip, aff, epChain))
		r.rules[epChain] = []string{fmt.Sprintf("update @%s { %s saddr }", aff, f.ip), dnat}
		picks = append(picks, pick+"goto "+epChain)
	}
	r.rules[svc] = append(rules, picks...)
	for name, rs := range r.rules {
		r.chains[name] = digest(rs)
	}
	return r
}

// ruleSeed: digests are compared only within this process.
var ruleSeed = maphash.MakeSeed()

// digest stands for a chain's rules. Two different rule lists collide
// with a chance of 2^-64, which would leave the old rules in place.
func digest(rules []string) uint64 {
	var h maphash.Hash
	h.SetSeed(ruleSeed)
	for _, r := range rules {
		h.WriteString(r)
		h.WriteByte(0)
	}
	return h.Sum64()
}

// equalRendered says whether two renderings program the same.
func equalRendered(a, b *rendered) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.chains) != len(b.chains) || len(a.affinity) != len(b.affinity) || len(a.elems) != len(b.elems) {
		return false
	}
	for n, d := range a.chains {
		if o, ok := b.chains[n]; !ok || o != d {
			return false
		}
	}
	for n, s := range a.affinity {
		if b.affinity[n] != s {
			return false
		}
	}
	for i := range a.elems {
		if a.elems[i].id() != b.elems[i].id() || a.elems[i].value != b.elems[i].value || a.elems[i].text != b.elems[i].text {
			return false
		}
	}
	return true
}
