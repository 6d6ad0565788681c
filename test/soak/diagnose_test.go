//go:build soak

package soak

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// A probe that fails without a refusal may be a moment the kernel did not
// hold the service: by the time it is judged (judgeLag later) the next sync
// has long hidden it. So the host's view of the VIP is taken at once, for
// every such probe, and printed only for those judged failed.

// worthDiagnosing says whether a probe's error is one the rules could
// explain: no answer and no refusal. A timeout is one too: a SYN that
// found no DNAT rule leaves a conntrack entry without NAT, which its
// retransmissions follow until the probe gives up.
func worthDiagnosing(p probe) bool {
	return p.err != nil && !refusal(p.err)
}

// failsSoFar says whether p would be judged failed on the writes recorded
// by now. Those still in flight can only excuse it later; the snapshot is
// taken for these alone, so that the probes of ordinary changes do not
// keep it busy when one that matters comes.
func (s *soak) failsSoFar(p probe) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return judge(&s.svcs[p.svc].h, p, s.p.Grace).failed()
}

// diagnose returns what the host namespace holds for vip: the nat rules
// that name it and the chains they jump to, the route to it, and the
// conntrack entries to it. One at a time: a burst of failures must not
// become a burst of iptables-save.
func (s *soak) diagnose(vip netip.Addr) string {
	select {
	case s.diagBusy <- struct{}{}:
		defer func() { <-s.diagBusy }()
	default:
		return "(no snapshot: another one was being taken)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "snapshot %s after the probe:\n", time.Now().Format("15:04:05.000"))
	save, err := s.lab.HostRun(ctx, "iptables-save", "-t", "nat")
	if err != nil {
		fmt.Fprintf(&b, "  iptables-save: %v\n", err)
	} else {
		for _, l := range natLinesFor(save, vip) {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	route, err := s.lab.HostRun(ctx, "ip", "route", "get", vip.String())
	fmt.Fprintf(&b, "  route: %s", strings.TrimSpace(route))
	if err != nil {
		fmt.Fprintf(&b, " (%v)", err)
	}
	b.WriteString("\n")
	var flows []*netlink.ConntrackFlow
	err = lab.InNetns(s.lab.HostNS, func() error {
		var err error
		flows, err = netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		return err
	})
	if err != nil {
		fmt.Fprintf(&b, "  conntrack: %v\n", err)
	}
	for _, f := range flows {
		if f.Forward.DstIP.Equal(net.IP(vip.AsSlice())) {
			fmt.Fprintf(&b, "  conntrack: %s\n", f)
		}
	}
	return b.String()
}

// natLinesFor picks from an iptables-save of nat the rules that name vip,
// and every rule of the chains those jump to.
func natLinesFor(save string, vip netip.Addr) []string {
	lines := strings.Split(save, "\n")
	dst := "-d " + vip.String() + "/32 "
	targets := map[string]bool{}
	var out []string
	for _, l := range lines {
		if strings.Contains(l, dst) {
			out = append(out, l)
			if i := strings.Index(l, " -j "); i >= 0 {
				targets[strings.Fields(l[i+4:])[0]] = true
			}
		}
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] == "-A" && targets[f[1]] {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		out = append(out, "no nat rule names "+vip.String())
	}
	return out
}

// daemonLinesNear returns the daemon's log lines stamped within a few
// seconds of [from, to]: what it was doing when a probe failed.
func daemonLinesNear(log string, from, to time.Time) string {
	from, to = from.Add(-5*time.Second), to.Add(time.Second)
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		v, ok := strings.CutPrefix(l, "time=")
		if !ok {
			continue
		}
		stamp, _, _ := strings.Cut(v, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || at.Before(from) || at.After(to) {
			continue
		}
		fmt.Fprintf(&b, "  daemon: %s\n", l)
	}
	if b.Len() == 0 {
		return "  daemon: no log line within 5 s of the probe\n"
	}
	return b.String()
}
