package ipvs

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// IPVS does the load balancing; iptables does the little around it, in a
// fixed set of rules that does not grow with the number of services:
//
//	nat    POSTROUTING -> OUTPOST-IPVS-POSTROUTING: masquerade IPVS connections
//	filter INPUT       -> OUTPOST-IPVS-FILTER: refuse new connections to a VIP
//	                      on a port that is no virtual server
//
// Which VIPs and ports exist is in two ipsets, so that a service change
// never touches iptables. While a cluster serves node ports
// (serve_node_ports), a third set holds them, and one more pair of rules
// refuses new connections to a node port of this host's own address that
// is no virtual server (a service without endpoints):
//
//	filter INPUT -> OUTPOST-IPVS-FILTER: ... and to a NODEPORTS member that
//	                is not in PORTS
//
// Node port connections are masqueraded by the rule for every IPVS
// connection: node ports are only served with masquerading on.
//
// A VIP is a local address, so any packet routed to it would be delivered
// here and served by IPVS: on a host with ip_forward on, anyone routing
// through it would reach every cluster as this host. The first rule drops
// new connections to a VIP from a source that is neither this host's own
// nor in the CLIENTS set (routed_clients); filter INPUT runs before IPVS
// (LOCAL_IN) sees the packet. Node ports are this host's own addresses,
// not VIPs: they answer everyone.
//
//	filter INPUT -> OUTPOST-IPVS-FILTER: drop new connections to a VIP from
//	                a source not LOCAL and not in CLIENTS
//
// The chains' prefix differs from the iptables backend's chain names
// (OUTPOST-SERVICES, OUTPOST-C-..., ...) so that our Cleanup can tell them
// apart.
const (
	chainPrefix      = "OUTPOST-IPVS-"
	chainPostrouting = "OUTPOST-IPVS-POSTROUTING"
	chainFilter      = "OUTPOST-IPVS-FILTER"
)

// hooks are the rules in built-in chains that lead into ours.
var hooks = []struct{ table, chain, target, comment string }{
	{"filter", "INPUT", chainFilter, "kube-outpost: refuse ClusterIP ports without endpoints"},
	{"nat", "POSTROUTING", chainPostrouting, "kube-outpost: masquerade IPVS connections"},
}

// ruleTables is the order tables appear in our scripts.
var ruleTables = []string{"filter", "nat"}

// comment is iptables.Comment: quoted and cut as the kernel keeps it.
func comment(s string) string { return iptables.Comment(s) }

// chainSpec is one of our chains with its rules.
type chainSpec struct {
	table, chain string
	rules        []string
}

// chainRules returns our chains, in script order.
func (p *Proxier) chainRules() []chainSpec {
	vips, ports := ourSets(p.opt.IPv6)

	// Every connection IPVS forwards is masqueraded when masquerading is
	// on. Off, only those that come from this host still are: a local
	// process connects from the VIP itself (it is a local address, and the
	// source of a connection to a local address), and the pod's reply to
	// a ClusterIP would never come back. -m ipvs sees IPVS connections
	// through conntrack (net/ipv4/vs/conntrack=1).
	masq := "-m ipvs --ipvs --vdir ORIGINAL --vmethod MASQ"
	if p.opt.MasqueradeMark == 0 {
		masq += fmt.Sprintf(" -m set --match-set %s src", vips.name)
	}
	masq += " " + comment("kube-outpost: masquerade IPVS connections") + " -j MASQUERADE"
	if p.opt.IPTables.HasRandomFully() {
		masq += " --random-fully"
	}

	// A VIP is a local address: without this, a listener of this host on
	// 0.0.0.0 would answer on every ClusterIP, and a service without
	// endpoints would be answered by the host or time out. Only new
	// connections: replies to a local client, addressed to the VIP it
	// connected from, pass INPUT before IPVS gives them back their
	// source, on ports that are no service (kube-proxy matches NEW too).
	// Dropped, not refused: to a host that may not use them, the VIPs
	// are not there.
	stranger := fmt.Sprintf("-m conntrack --ctstate NEW -m set --match-set %s dst -m addrtype ! --src-type LOCAL -m set ! --match-set %s src %s -j DROP",
		vips.name, clientSet(p.opt.IPv6).name, comment("kube-outpost: ClusterIP from a source not in routed_clients"))
	match := fmt.Sprintf("-m conntrack --ctstate NEW -m set --match-set %s dst -m set ! --match-set %s dst,dst", vips.name, ports.name)
	refuse := comment("kube-outpost: ClusterIP port without endpoints")
	filter := []string{
		stranger,
		// A TCP client gets a reset, as from a closed port.
		fmt.Sprintf("-p tcp %s %s -j REJECT --reject-with tcp-reset", match, refuse),
		fmt.Sprintf("%s %s -j REJECT", match, refuse),
	}
	if p.nodePortsOn {
		np := fmt.Sprintf("-m conntrack --ctstate NEW -m set --match-set %s dst,dst -m set ! --match-set %s dst,dst",
			nodePortSet(p.opt.IPv6).name, ports.name)
		refuse := comment("kube-outpost: node port without endpoints")
		filter = append(filter,
			fmt.Sprintf("-p tcp %s %s -j REJECT --reject-with tcp-reset", np, refuse),
			fmt.Sprintf("%s %s -j REJECT", np, refuse))
	}
	return []chainSpec{
		{"filter", chainFilter, filter},
		{"nat", chainPostrouting, []string{masq}},
	}
}

// hookRule is a rule of a built-in chain that jumps to one of our chains.
type hookRule struct {
	table, chain, target string
	spec                 string // as iptables-save prints it, without "-A chain"
}

// listHooks returns the rules outside our chains that jump into them, and
// our chains, per table.
func (p *Proxier) listHooks(ctx context.Context, tables []string) ([]hookRule, map[string][]string, error) {
	var out []hookRule
	chains := map[string][]string{}
	for _, table := range tables {
		data, err := p.opt.IPTables.Save(ctx, table)
		if err != nil {
			return nil, nil, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, ":"+chainPrefix) {
				chains[table] = append(chains[table], strings.Fields(line[1:])[0])
				continue
			}
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "-A" || strings.HasPrefix(f[1], chainPrefix) {
				continue
			}
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], chainPrefix) {
					spec := strings.TrimPrefix(line, "-A "+f[1]+" ")
					out = append(out, hookRule{table: table, chain: f[1], target: f[i+1], spec: spec})
					break
				}
			}
		}
	}
	return out, chains, nil
}

// rulesScript is the iptables-restore transaction of a full sync: our
// chains declared (which flushes them) and rewritten, and the hooks that
// are missing inserted at the top of their built-in chains.
func (p *Proxier) rulesScript(existing []hookRule) []byte {
	rules := p.chainRules()
	var b bytes.Buffer
	for _, table := range ruleTables {
		fmt.Fprintf(&b, "*%s\n", table)
		for _, c := range rules {
			if c.table == table {
				fmt.Fprintf(&b, ":%s - [0:0]\n", c.chain)
			}
		}
		for _, c := range rules {
			for _, r := range c.rules {
				if c.table == table {
					fmt.Fprintf(&b, "-A %s %s\n", c.chain, r)
				}
			}
		}
		for _, h := range hooks {
			if h.table != table || hooked(existing, h.table, h.chain, h.target) {
				continue
			}
			fmt.Fprintf(&b, "-I %s 1 %s -j %s\n", h.chain, comment(h.comment), h.target)
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

func hooked(existing []hookRule, table, chain, target string) bool {
	for _, h := range existing {
		if h.table == table && h.chain == chain && h.target == target {
			return true
		}
	}
	return false
}

// cleanupScript deletes the hooks, then our chains.
func cleanupScript(existing []hookRule, chains map[string][]string) []byte {
	var b bytes.Buffer
	for _, table := range ruleTables {
		if len(chains[table]) == 0 && !hasTable(existing, table) {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", table)
		// Declaring flushes, so that -X finds the chains empty.
		for _, ch := range chains[table] {
			fmt.Fprintf(&b, ":%s - [0:0]\n", ch)
		}
		for _, h := range existing {
			if h.table == table {
				fmt.Fprintf(&b, "-D %s %s\n", h.chain, h.spec)
			}
		}
		for _, ch := range chains[table] {
			fmt.Fprintf(&b, "-X %s\n", ch)
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

func hasTable(hs []hookRule, table string) bool {
	for _, h := range hs {
		if h.table == table {
			return true
		}
	}
	return false
}
