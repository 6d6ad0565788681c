package ipvs

import (
	"fmt"
	"math"
	"net/netip"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// compare lists how IPVS differs from what the backend programs for want,
// and the differences that are expected: real servers draining.
func (v *PortView) compare(want proxy.Want, target, scheduler string) (mismatches, notes []string) {
	mismatches = []string{}
	mismatch := func(format string, args ...any) { mismatches = append(mismatches, fmt.Sprintf(format, args...)) }
	s := v.Server
	if want.Key == nil {
		if s != nil {
			mismatch("IPVS still has a virtual server for %s, but the model has no such service port", target)
		}
		return mismatches, nil
	}
	if !v.Bound {
		mismatch("%s is not bound to %s: the kernel never hands its packets to IPVS", want.Target, Interface)
	}
	if len(want.Endpoints) == 0 {
		if s != nil {
			mismatch("a virtual server for %s is still there, although it has no endpoints", target)
		}
		return mismatches, nil
	}
	if s == nil {
		mismatch("IPVS has no virtual server for %s", target)
		return mismatches, nil
	}
	if scheduler != "" && s.Scheduler != scheduler {
		mismatch("the virtual server's scheduler is %s, not %s as configured", s.Scheduler, scheduler)
	}
	wantTimeout := uint32(0)
	if want.Affinity > 0 {
		wantTimeout = uint32(max(1, int64(math.Round(want.Affinity.Seconds()))))
	}
	switch {
	case wantTimeout == 0 && s.Persistent:
		mismatch("the virtual server is persistent for %ds, but the service has no ClientIP affinity", s.Timeout)
	case wantTimeout > 0 && (!s.Persistent || s.Timeout != wantTimeout):
		mismatch("the virtual server should be persistent for %ds (ClientIP affinity)", wantTimeout)
	}
	have := map[netip.AddrPort]Destination{}
	for _, d := range s.Destinations {
		have[d.Addr] = d
	}
	for _, e := range want.Endpoints {
		d, ok := have[e.Addr]
		switch {
		case !ok:
			mismatch("endpoint %s is wanted, but the virtual server has no such real server", e.Addr)
		case d.Weight != e.Weight:
			mismatch("real server %s has weight %d, not %d", e.Addr, d.Weight, e.Weight)
		}
		delete(have, e.Addr)
	}
	for _, d := range s.Destinations {
		if _, extra := have[d.Addr]; !extra {
			continue
		}
		if d.Weight == 0 {
			notes = append(notes, fmt.Sprintf("%s is draining: weight 0, gets no new connections, and goes when its %d active connections end",
				d.Addr, d.ActiveConns))
			continue
		}
		mismatch("IPVS sends connections to %s at weight %d, which the model does not want", d.Addr, d.Weight)
	}
	return mismatches, notes
}
