package iptables

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// explainer reads back this mode's rules for `kube-outpost explain`.
type explainer struct {
	// runners are the iptables of each family the backends program.
	runners func() map[bool]Runner
}

// newExplainer makes the runners at the first ExplainPort, not here: a
// runner runs `iptables --version`, which a daemon nobody asks should not
// pay for.
func newExplainer(cfg *config.Config, log *slog.Logger) proxy.Explainer {
	return lazyExplainer(proxy.Families(cfg), NewRunner, log)
}

func lazyExplainer(families []bool, newRunner func(ipv6 bool) (Runner, error), log *slog.Logger) *explainer {
	return &explainer{runners: sync.OnceValue(func() map[bool]Runner {
		rs := map[bool]Runner{}
		for _, v6 := range families {
			r, err := newRunner(v6)
			if err != nil {
				// Explain then says that family has no rules of ours.
				log.Warn("explain cannot read iptables", "ipv6", v6, "err", err)
				continue
			}
			rs[v6] = r
		}
		return rs
	})}
}

// NewExplainerFor is the explainer over given runners, keyed by ipv6, for
// tests of explain above this package.
func NewExplainerFor(runners map[bool]Runner) proxy.Explainer {
	return &explainer{runners: func() map[bool]Runner { return runners }}
}

// Share is what the statistic ladder gives each of n endpoints.
func (*explainer) Share(n int) proxy.EndpointShare {
	if n == 0 {
		return proxy.EndpointShare{}
	}
	return proxy.EndpointShare{Probability: 1 / float64(n)}
}

func (e *explainer) ExplainPort(ctx context.Context, want proxy.Want) (proxy.PortView, error) {
	v6 := want.Target.Addr().Is6()
	r := e.runners()[v6]
	if r == nil {
		family := "IPv4"
		if v6 {
			family = "IPv6"
		}
		return proxy.PortView{}, fmt.Errorf("kube-outpost programs no %s iptables rules on this host", family)
	}
	v, err := ReadPort(ctx, r, want.Target, want.Protocol)
	if err != nil {
		return proxy.PortView{}, err
	}
	out := proxy.PortView{
		Lines:      v.lines(len(want.Endpoints) > 0),
		Endpoints:  []proxy.KernelEndpoint{},
		Empty:      len(v.Dispatch)+len(v.Reject) == 0,
		Mismatches: v.mismatches(want),
		Detail:     v.detail(),
	}
	for _, ep := range v.Endpoints {
		out.Endpoints = append(out.Endpoints, proxy.KernelEndpoint{Addr: ep.Addr, EndpointShare: proxy.EndpointShare{Probability: ep.Probability}})
	}
	return out, nil
}

// lines are the rules on the way that matters: to the DNAT rules where
// the model has endpoints (or a dispatch rule is found), to the reject
// rule where it has none (or one is found).
func (v *PortView) lines(endpoints bool) []string {
	var groups [][]Rule
	if endpoints || len(v.Dispatch) > 0 {
		groups = append(groups, v.Path, v.Dispatch, v.Rules)
	}
	if !endpoints || len(v.Reject) > 0 {
		groups = append(groups, v.RejectPath, v.Reject)
	}
	out := []string{}
	for _, g := range groups {
		out = append(out, argv(g)...)
	}
	return out
}

// ExplainDetail is explain's kernel.detail in this mode. Rules are written
// as iptables arguments, "-t nat -A CHAIN ...".
type ExplainDetail struct {
	// Path are the nat rules on the way to the dispatch rule.
	Path []string `json:"path"`
	// Dispatch are the rules that send the port to its chain: one.
	Dispatch []string `json:"dispatch"`
	Chain    string   `json:"chain,omitempty"`
	Rules    []string `json:"rules"`
	// Endpoints are the DNAT targets with the share the statistic ladder
	// gives each.
	Endpoints []EndpointShare `json:"endpoints"`
	// NotDNATed is the share of new connections no rule DNATs.
	NotDNATed       float64  `json:"not_dnated,omitempty"`
	AffinitySeconds int      `json:"affinity_seconds,omitempty"`
	RejectPath      []string `json:"reject_path"`
	Reject          []string `json:"reject"`
}

func (v *PortView) detail() ExplainDetail {
	return ExplainDetail{
		Path: argv(v.Path), Dispatch: argv(v.Dispatch), Chain: v.Chain, Rules: argv(v.Rules),
		Endpoints: append([]EndpointShare{}, v.Endpoints...), NotDNATed: v.NotDNATed, AffinitySeconds: v.AffinitySeconds,
		RejectPath: argv(v.RejectPath), Reject: argv(v.Reject),
	}
}

// argv writes rules as the arguments that would add them.
func argv(rs []Rule) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, "-t "+r.Table+" "+r.String())
	}
	return out
}
