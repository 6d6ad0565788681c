package iptables

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// shareTolerance is how far a kernel's share may be from the model's:
// iptables keeps probabilities as 31-bit fractions and prints 11 digits.
const shareTolerance = 1e-4

// mismatches lists how the rules differ from what the backend writes for
// want.
func (v *PortView) mismatches(want proxy.Want) []string {
	out := []string{}
	mismatch := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	target := want.Target.String() + "/" + string(want.Protocol)
	if want.Key == nil {
		return append(out, proxy.GonePortMismatches(target, len(v.Dispatch) > 0, len(v.Reject) > 0, v.Chain)...)
	}
	if len(want.Endpoints) == 0 {
		if !hooked(v.RejectPath, "OUTPUT", chainFilter) {
			mismatch("no rule of filter OUTPUT jumps to %s: ports without endpoints are not refused", chainFilter)
		}
		if len(v.Reject) == 0 {
			mismatch("no reject rule for %s: connections are not refused, they time out or reach whatever else answers", target)
		}
		if len(v.Dispatch) > 0 {
			mismatch("a dispatch rule still sends %s to %s, although it has no endpoints", target, v.Chain)
		}
		return out
	}
	if !hooked(v.Path, "OUTPUT", chainServices) {
		mismatch("no rule of nat OUTPUT jumps to %s: local processes reach no ClusterIP", chainServices)
	}
	if !hooked(v.Path, "PREROUTING", chainRouted) {
		mismatch("no rule of nat PREROUTING jumps to %s: hosts routed through this one reach no ClusterIP, not even those in routed_clients", chainRouted)
	}
	if !slices.ContainsFunc(v.Path, func(r Rule) bool { return r.Chain == chainServices }) {
		mismatch("%s has no rule for the service range of %s", chainServices, target)
	}
	if len(v.Reject) > 0 {
		mismatch("a reject rule for %s is left in the filter table, although it has endpoints", target)
	}
	switch n := len(v.Dispatch); {
	case n == 0:
		mismatch("no dispatch rule matches %s: packets to it are not translated", target)
		return out
	case n > 1:
		mismatch("%d dispatch rules match %s; the first one wins", n, target)
	}
	if ch := serviceChain(*want.Key); v.Chain != ch {
		mismatch("the dispatch rule jumps to %s, not to %s, the chain of this service port", v.Chain, ch)
	}
	shares := make([]proxy.KernelShare, 0, len(v.Endpoints))
	for _, e := range v.Endpoints {
		shares = append(shares, proxy.KernelShare{Addr: e.Addr, Probability: e.Probability})
	}
	out = append(out, proxy.ShareMismatches(want.Endpoints, shares, shareTolerance, "rule")...)
	if v.NotDNATed > shareTolerance {
		mismatch("%s of new connections leave %s without a DNAT", proxy.Percent(v.NotDNATed), v.Chain)
	}
	if secs := int(math.Round(want.Affinity.Seconds())); v.AffinitySeconds != secs {
		mismatch("ClientIP affinity: the kernel keeps clients %s, the model wants %s", affinityText(v.AffinitySeconds), affinityText(secs))
	}
	return out
}

func affinityText(secs int) string {
	if secs == 0 {
		return "not at all"
	}
	return fmt.Sprintf("%ds", secs)
}

// percent writes a share as explain's text output does.

// hooked says whether path has a rule of a built-in chain that jumps to to.
func hooked(path []Rule, from, to string) bool {
	return slices.ContainsFunc(path, func(r Rule) bool {
		return r.Chain == from && strings.HasSuffix(r.Spec, "-j "+to)
	})
}
