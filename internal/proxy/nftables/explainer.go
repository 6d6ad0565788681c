package nftables

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// explainer reads back this mode's table for `kube-outpost explain`.
type explainer struct {
	readers func() map[bool]reader
}

// newExplainer makes the knftables interfaces at the first ExplainPort:
// making one runs nft twice, which a daemon nobody asks should not pay.
func newExplainer(cfg *config.Config, log *slog.Logger) proxy.Explainer {
	families := proxy.Families(cfg)
	return &explainer{readers: sync.OnceValue(func() map[bool]reader {
		rs := map[bool]reader{}
		for _, v6 := range families {
			nft, err := knftables.New(familyOf(v6).nft, TableName)
			if err != nil {
				log.Warn("explain cannot read nftables", "ipv6", v6, "err", err)
				continue
			}
			rs[v6] = kernelReader{Interface: nft, fam: familyOf(v6)}
		}
		return rs
	})}
}

// Share is what numgen random mod n gives each of n endpoints.
func (*explainer) Share(n int) proxy.EndpointShare {
	if n == 0 {
		return proxy.EndpointShare{}
	}
	return proxy.EndpointShare{Probability: 1 / float64(n)}
}

func (e *explainer) ExplainPort(ctx context.Context, want proxy.Want) (proxy.PortView, error) {
	v6 := want.Target.Addr().Is6()
	r := e.readers()[v6]
	if r == nil {
		return proxy.PortView{}, fmt.Errorf("kube-outpost programs no %s nftables table on this host", familyOf(v6).nft)
	}
	v, err := readPort(ctx, r, want.Target, want.Protocol)
	if err != nil {
		return proxy.PortView{}, err
	}
	out := proxy.PortView{
		Lines:      v.lines(),
		Endpoints:  []proxy.KernelEndpoint{},
		Empty:      len(v.Dispatch)+len(v.Reject) == 0,
		Mismatches: v.mismatches(want),
		Detail:     v,
	}
	for _, ep := range v.Endpoints {
		out.Endpoints = append(out.Endpoints, proxy.KernelEndpoint{Addr: ep.Addr, EndpointShare: proxy.EndpointShare{Probability: ep.Probability}})
	}
	return out, nil
}

// lines are the objects a new connection meets, in that order.
func (v *PortView) lines() []string {
	out := []string{}
	for _, d := range v.Dispatch {
		out = append(out, "map "+d)
	}
	if v.Chain != "" {
		for _, r := range v.Rules {
			out = append(out, fmt.Sprintf("chain %s: %s", v.Chain, r))
		}
		for _, ep := range v.Endpoints {
			for _, r := range v.EndpointChains[ep.Chain] {
				out = append(out, fmt.Sprintf("chain %s: %s", ep.Chain, r))
			}
		}
	}
	if v.Counter != "" {
		out = append(out, fmt.Sprintf("counter %s: %d new connections", v.Counter, v.NewConnections))
	}
	for _, r := range v.Reject {
		out = append(out, "set "+r+" (refused)")
	}
	return out
}

// shareTolerance: numgen's shares are exact fractions, printed as floats.
const shareTolerance = 1e-9

// mismatches lists how the table differs from what the backend writes for
// want.
func (v *PortView) mismatches(want proxy.Want) []string {
	out := []string{}
	mismatch := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	target := want.Target.String() + "/" + string(want.Protocol)
	if want.Key == nil {
		return append(out, proxy.GonePortMismatches(target, len(v.Dispatch) > 0, len(v.Reject) > 0, v.Chain)...)
	}
	if len(want.Endpoints) == 0 {
		if len(v.Reject) == 0 {
			mismatch("no reject set holds %s: connections are not refused, they time out or reach whatever else answers", target)
		}
		if len(v.Dispatch) > 0 {
			mismatch("a map still sends %s to %s, although it has no endpoints", target, v.Chain)
		}
		return out
	}
	if len(v.Reject) > 0 {
		mismatch("a reject set still holds %s, although it has endpoints", target)
	}
	switch n := len(v.Dispatch); {
	case n == 0:
		mismatch("no map element matches %s: packets to it are not translated", target)
		return out
	case n > 1:
		mismatch("%d map elements match %s; the first cluster range that holds it wins", n, target)
	}
	if !hooked(v.Path, chainNatOutput) || !hooked(v.Path, chainNatPrerouting) {
		mismatch("the nat hooks do not lead to chain %s: local processes or routed clients reach no service", chainServices)
	}
	if !strings.Contains(strings.Join(v.Path, "\n"), chainServices+": ") {
		mismatch("chain %s has no rule that looks %s up in the map that holds it", chainServices, target)
	}
	if ch := serviceChain(*want.Key); v.Chain != ch {
		mismatch("the map element leads to %s, not to %s, the chain of this service port", v.Chain, ch)
	}
	shares := make([]proxy.KernelShare, 0, len(v.Endpoints))
	for _, e := range v.Endpoints {
		shares = append(shares, proxy.KernelShare{Addr: e.Addr, Probability: e.Probability})
	}
	out = append(out, proxy.ShareMismatches(want.Endpoints, shares, shareTolerance, "numgen pick")...)
	secs := int64(math.Round(want.Affinity.Seconds()))
	wantSets := map[string]bool{}
	if secs > 0 {
		for _, e := range want.Endpoints {
			wantSets[affinitySet(*want.Key, e.Addr, secs)] = true
		}
	}
	same := len(wantSets) == len(v.Affinity)
	for _, s := range v.Affinity {
		same = same && wantSets[s]
	}
	if !same {
		what := "no ClientIP affinity"
		if secs > 0 {
			what = fmt.Sprintf("ClientIP affinity for %ds", secs)
		}
		mismatch("the affinity sets of %s are not those of %s", v.Chain, what)
	}
	if v.Counter != counterName(*want.Key) {
		mismatch("chain %s does not count into counter %s", v.Chain, counterName(*want.Key))
	}
	return out
}

// hooked says whether path has a rule of the base chain from that jumps
// on toward the services chain.
func hooked(path []string, from string) bool {
	for _, r := range path {
		if strings.HasPrefix(r, from+": jump ") {
			return true
		}
	}
	return false
}
