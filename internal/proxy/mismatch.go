package proxy

import (
	"fmt"
	"math"
	"net/netip"
)

// The comparisons every mode's explain makes alike, so that a port reads
// the same whatever mode programs it.

// GonePortMismatches is what explain says of a port the model does not
// have (want.Key nil) while the kernel still dispatches it to chain or
// refuses it.
func GonePortMismatches(target string, dispatching, refusing bool, chain string) []string {
	switch {
	case dispatching:
		return []string{fmt.Sprintf("the kernel still sends %s to %s, but the model has no such service port", target, chain)}
	case refusing:
		return []string{fmt.Sprintf("the kernel still refuses %s, but the model has no such service port", target)}
	}
	return nil
}

// KernelShare is one endpoint the kernel DNATs to, with its share of new
// connections.
type KernelShare struct {
	Addr        netip.AddrPort
	Probability float64
}

// ShareMismatches compares the shares the kernel gives endpoints with the
// model's, within tolerance; dnatter names what DNATs in the mode ("rule",
// "endpoint chain"). An endpoint the kernel names twice counts its shares
// added up; extras are listed in the kernel's order.
func ShareMismatches(want []WantEndpoint, kernel []KernelShare, tolerance float64, dnatter string) []string {
	var out []string
	got := map[netip.AddrPort]float64{}
	for _, k := range kernel {
		got[k.Addr] += k.Probability
	}
	for _, e := range want {
		p, ok := got[e.Addr]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("endpoint %s is wanted, but no %s DNATs to it", e.Addr, dnatter))
		case math.Abs(p-e.Probability) > tolerance:
			out = append(out, fmt.Sprintf("endpoint %s gets %s of new connections, not %s", e.Addr, Percent(p), Percent(e.Probability)))
		}
		delete(got, e.Addr)
	}
	for _, k := range kernel {
		if p, extra := got[k.Addr]; extra {
			out = append(out, fmt.Sprintf("the kernel DNATs %s of new connections to %s, which the model does not want", Percent(p), k.Addr))
			delete(got, k.Addr)
		}
	}
	return out
}

// Percent is a share as explain prints it.
func Percent(p float64) string { return fmt.Sprintf("%.1f%%", p*100) }
