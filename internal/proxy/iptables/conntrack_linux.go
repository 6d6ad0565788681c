package iptables

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkConntrack speaks ctnetlink itself: the conntrack tool it replaces
// was forked once per flow, and read the whole table each time.
type netlinkConntrack struct{}

// NewConntrack returns the kernel's conntrack table, over netlink.
func NewConntrack() Conntrack { return netlinkConntrack{} }

func (netlinkConntrack) Clear(ctx context.Context, f Forget) error {
	v4, v6 := newForgetSet(), newForgetSet()
	set := func(a netip.Addr) forgetSet {
		if a.Unmap().Is4() {
			return v4
		}
		return v6
	}
	for _, fl := range f.UDP {
		fl = Flow{unmapped(fl.VIP), unmapped(fl.Endpoint)}
		set(fl.VIP.Addr()).udp[fl] = struct{}{}
	}
	for _, p := range f.Undiverted {
		proto, ok := p.Protocol.IPNumber()
		if !ok {
			continue
		}
		a := unmapped(p.Addr)
		set(a.Addr()).undiverted[protoAddrPort{proto, a}] = struct{}{}
	}
	// One socket for the dump and every delete, where netlink's package
	// functions open one per message.
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("opening a conntrack netlink socket: %w", err)
	}
	defer h.Close()
	// A shared socket has no timeout of its own, and a sync must not
	// hang on a kernel that does not answer.
	if err := h.SetSocketTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("conntrack netlink socket: %w", err)
	}
	var errs []error
	for _, fam := range []struct {
		family netlink.InetFamily
		set    forgetSet
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		if fam.set.empty() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam.family, fam.set)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			// The table changed while it was read, so the read may have
			// missed entries. What it found is gone; once more for the
			// rest.
			_, err = h.ConntrackDeleteFilters(netlink.ConntrackTable, fam.family, fam.set)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting %d UDP flows and the flows without DNAT of %d service ports from the conntrack table: %w",
				len(fam.set.udp), len(fam.set.undiverted), err))
		}
	}
	return errors.Join(errs...)
}

type protoAddrPort struct {
	proto uint8
	addr  netip.AddrPort
}

// forgetSet matches the conntrack entries of one family's Forget with a
// lookup or two per entry, so that one read of the table serves the whole
// batch.
type forgetSet struct {
	udp        map[Flow]struct{}
	undiverted map[protoAddrPort]struct{}
}

func newForgetSet() forgetSet {
	return forgetSet{udp: map[Flow]struct{}{}, undiverted: map[protoAddrPort]struct{}{}}
}

func (s forgetSet) empty() bool { return len(s.udp) == 0 && len(s.undiverted) == 0 }

var _ netlink.CustomConntrackFilter = forgetSet{}

// MatchConntrackFlow: a UDP flow whose original destination is the VIP and
// whose reply, after DNAT, comes from the endpoint; or a flow to a portal
// whose reply comes from the portal itself: no DNAT was done.
func (s forgetSet) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	dst, ok1 := addrPort(f.Forward.DstIP, f.Forward.DstPort)
	src, ok2 := addrPort(f.Reverse.SrcIP, f.Reverse.SrcPort)
	if !ok1 || !ok2 {
		return false
	}
	if f.Forward.Protocol == unix.IPPROTO_UDP {
		if _, ok := s.udp[Flow{dst, src}]; ok {
			return true
		}
	}
	if dst != src {
		return false
	}
	_, ok := s.undiverted[protoAddrPort{f.Forward.Protocol, dst}]
	return ok
}

// addrPort turns netlink's address, 4 or 16 bytes for IPv4, into the
// model's form.
func addrPort(ip net.IP, port uint16) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port), ok
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
