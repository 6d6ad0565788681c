package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// reader reads our table of one family. knftables lists names, elements
// and counters, but gives no rule's text; chainRules gives that.
type reader interface {
	List(ctx context.Context, objectType string) ([]string, error)
	ListElements(ctx context.Context, objectType, name string) ([]*knftables.Element, error)
	ListCounters(ctx context.Context) ([]*knftables.Counter, error)
	chainRules(ctx context.Context, chain string) ([]string, error)
}

// kernelReader reads the kernel through nft.
type kernelReader struct {
	knftables.Interface
	fam family
}

func (k kernelReader) chainRules(ctx context.Context, chain string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "nft", "list", "chain", string(k.fam.nft), TableName, chain).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && strings.Contains(string(ee.Stderr), "No such file or directory") {
			return nil, nil
		}
		return nil, fmt.Errorf("nft list chain %s %s %s: %w", k.fam.nft, TableName, chain, err)
	}
	return chainListing(string(out)), nil
}

// chainListing is the rules of `nft list chain` output: the lines inside
// the chain's braces, without a base chain's type line or comments.
func chainListing(out string) []string {
	var rules []string
	depth := 0
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasSuffix(l, "{"):
			depth++
		case l == "}":
			depth--
		case depth == 2 && l != "" && !strings.HasPrefix(l, "type "):
			rules = append(rules, stripComment(l))
		}
	}
	return rules
}

var commentRE = regexp.MustCompile(` comment "[^"]*"$`)

func stripComment(rule string) string { return commentRE.ReplaceAllString(rule, "") }

// PortView is what our table holds for one address:port/protocol, read
// back for `kube-outpost explain`. It is found by the map elements that
// match the address, not by the names the model would give, so that
// objects someone changed, or an earlier run left, show as they are.
type PortView struct {
	// Dispatch are the map elements that send the port to a chain
	// ("ips-<cluster>: 10.96.0.10 . tcp . 80 : goto svc-..."); one when
	// all is well.
	Dispatch []string `json:"dispatch"`
	// Path are the rules of the services chain whose range holds the
	// address and that look it up in a map holding it.
	Path []string `json:"path"`
	// Chain is the service chain the first element leads to, and Rules
	// its rules.
	Chain string   `json:"chain,omitempty"`
	Rules []string `json:"rules"`
	// Endpoints are the DNAT targets with the share numgen gives each.
	Endpoints []EndpointShare `json:"endpoints"`
	// EndpointChains are the endpoint chains' rules, by chain (ClientIP
	// affinity).
	EndpointChains map[string][]string `json:"endpoint_chains,omitempty"`
	// Affinity are the affinity sets the service chain looks clients up
	// in, one per endpoint with ClientIP affinity.
	Affinity []string `json:"affinity,omitempty"`
	// Counter is the port's named counter, and NewConnections its count.
	Counter        string `json:"counter,omitempty"`
	NewConnections uint64 `json:"new_connections"`
	// Reject are the elements of reject sets that refuse the port.
	Reject []string `json:"reject"`
}

// EndpointShare is one DNAT target of a service chain; Chain is its
// endpoint chain, none when the service chain DNATs itself.
type EndpointShare struct {
	Addr        netip.AddrPort `json:"addr"`
	Chain       string         `json:"chain,omitempty"`
	Probability float64        `json:"probability"`
}

var (
	// pickRE is a rule that picks an endpoint, the last without numgen:
	// DNAT to it, or (ClientIP affinity) go to its chain.
	pickRE     = regexp.MustCompile(`^(?:numgen random mod (\d+) 0 )?(?:meta l4proto \S+ dnat (?:ip6? )?to (\S+)|goto (\S+))$`)
	dnatRE     = regexp.MustCompile(`dnat (?:ip6? )?to (\S+)$`)
	affinityRE = regexp.MustCompile(`saddr @(\S+) goto (\S+)$`)
	counterRE  = regexp.MustCompile(`counter name "?([^" ]+)"?`)
	mapRuleRE  = regexp.MustCompile(`daddr (\S+) ip6? daddr \. meta l4proto \. th dport vmap @(\S+)`)
)

// readPort reads what our table does with packets to target over pr.
func readPort(ctx context.Context, r reader, target netip.AddrPort, pr model.Protocol) (*PortView, error) {
	v := &PortView{Dispatch: []string{}, Path: []string{}, Rules: []string{}, Endpoints: []EndpointShare{}, Reject: []string{}}
	key := []string{target.Addr().String(), proto(pr), strconv.Itoa(int(target.Port()))}
	var maps []string
	for _, kind := range []string{"map", "set"} {
		names, err := r.List(ctx, kind)
		if err != nil {
			if knftables.IsNotFound(err) {
				return v, nil // no table: nothing of ours
			}
			return nil, err
		}
		slices.Sort(names)
		for _, name := range names {
			isMap := strings.HasPrefix(name, prefixDispatch)
			if !isMap && !strings.HasPrefix(name, prefixReject) {
				continue
			}
			els, err := r.ListElements(ctx, kind, name)
			if err != nil {
				return nil, err
			}
			for _, e := range els {
				if !sameKey(e.Key, key) {
					continue
				}
				if isMap {
					maps = append(maps, name)
					v.Dispatch = append(v.Dispatch, fmt.Sprintf("%s: %s : %s", name, strings.Join(e.Key, " . "), strings.Join(e.Value, " ")))
					if v.Chain == "" && len(e.Value) == 1 {
						v.Chain = strings.TrimPrefix(strings.TrimPrefix(e.Value[0], "goto "), "jump ")
					}
				} else {
					v.Reject = append(v.Reject, fmt.Sprintf("%s: %s", name, strings.Join(e.Key, " . ")))
				}
			}
		}
	}
	if err := v.readPath(ctx, r, target.Addr(), maps); err != nil {
		return nil, err
	}
	if v.Chain == "" {
		return v, nil
	}
	return v, v.readChain(ctx, r)
}

// sameKey compares an element's key with ours, addresses as addresses.
func sameKey(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		a, err1 := netip.ParseAddr(got[i])
		b, err2 := netip.ParseAddr(want[i])
		if err1 != nil || err2 != nil || a != b {
			return false
		}
	}
	return true
}

// readPath finds the services chain's rules that look addr up in one of
// maps, the nat hooks' jumps into it.
func (v *PortView) readPath(ctx context.Context, r reader, addr netip.Addr, maps []string) error {
	for _, ch := range []string{chainNatOutput, chainNatPrerouting} {
		rs, err := r.chainRules(ctx, ch)
		if err != nil {
			return err
		}
		for _, rule := range rs {
			v.Path = append(v.Path, ch+": "+rule)
		}
	}
	rs, err := r.chainRules(ctx, chainServices)
	if err != nil {
		return err
	}
	for _, rule := range rs {
		m := mapRuleRE.FindStringSubmatch(rule)
		if m == nil || !slices.Contains(maps, m[2]) {
			continue
		}
		if p, err := netip.ParsePrefix(m[1]); err == nil && p.Contains(addr) {
			v.Path = append(v.Path, chainServices+": "+rule)
		} else if a, err := netip.ParseAddr(m[1]); err == nil && a == addr {
			v.Path = append(v.Path, chainServices+": "+rule)
		}
	}
	return nil
}

// readChain reads the service chain, its endpoint chains and counter.
func (v *PortView) readChain(ctx context.Context, r reader) error {
	rs, err := r.chainRules(ctx, v.Chain)
	if err != nil {
		return err
	}
	v.Rules = append(v.Rules, rs...)
	v.EndpointChains = map[string][]string{}
	// left is the share of new connections that no rule picked yet.
	left := 1.0
	for _, rule := range rs {
		if m := counterRE.FindStringSubmatch(rule); m != nil {
			v.Counter = m[1]
		}
		if m := affinityRE.FindStringSubmatch(rule); m != nil {
			v.Affinity = append(v.Affinity, m[1])
		}
		m := pickRE.FindStringSubmatch(rule)
		if m == nil || left == 0 {
			continue
		}
		// numgen random mod n 0 matches 1 in n of the connections
		// that reach it; a rule without takes them all.
		p := left
		if m[1] != "" {
			n, _ := strconv.Atoi(m[1])
			if n == 0 {
				continue
			}
			p = left / float64(n)
		}
		left -= p
		if m[3] == "" {
			ap, _ := netip.ParseAddrPort(m[2])
			v.addShare(ap, "", p)
			continue
		}
		ep, err := v.readEndpoint(ctx, r, m[3])
		if err != nil {
			return err
		}
		v.addShare(ep, m[3], p)
	}
	if v.Counter != "" {
		cs, err := r.ListCounters(ctx)
		if err != nil {
			return err
		}
		for _, c := range cs {
			// knftables' Fake lists nils before its counters.
			if c != nil && c.Name == v.Counter && c.Packets != nil {
				v.NewConnections = *c.Packets
			}
		}
	}
	return nil
}

func (v *PortView) readEndpoint(ctx context.Context, r reader, chain string) (netip.AddrPort, error) {
	if rs, ok := v.EndpointChains[chain]; ok {
		return dnatTarget(rs), nil
	}
	rs, err := r.chainRules(ctx, chain)
	if err != nil {
		return netip.AddrPort{}, err
	}
	v.EndpointChains[chain] = rs
	return dnatTarget(rs), nil
}

func dnatTarget(rules []string) netip.AddrPort {
	for _, rule := range rules {
		if m := dnatRE.FindStringSubmatch(rule); m != nil {
			if ap, err := netip.ParseAddrPort(m[1]); err == nil {
				return ap
			}
		}
	}
	return netip.AddrPort{}
}

func (v *PortView) addShare(ep netip.AddrPort, chain string, p float64) {
	for i := range v.Endpoints {
		if v.Endpoints[i].Chain == chain && v.Endpoints[i].Addr == ep {
			v.Endpoints[i].Probability += p
			return
		}
	}
	v.Endpoints = append(v.Endpoints, EndpointShare{Addr: ep, Chain: chain, Probability: p})
}
