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

func (netlinkConntrack) ClearUDP(ctx context.Context, flows []Flow) error {
	v4, v6 := flowSet{}, flowSet{}
	for _, f := range flows {
		f = Flow{unmapped(f.VIP), unmapped(f.Endpoint)}
		if f.VIP.Addr().Is4() {
			v4[f] = struct{}{}
		} else {
			v6[f] = struct{}{}
		}
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
		set    flowSet
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		if len(fam.set) == 0 {
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
			errs = append(errs, fmt.Errorf("deleting %d UDP flows from the conntrack table: %w", len(fam.set), err))
		}
	}
	return errors.Join(errs...)
}

// flowSet matches the conntrack entries of a batch of flows with one
// lookup per entry, so that one read of the table serves the whole batch.
type flowSet map[Flow]struct{}

var _ netlink.CustomConntrackFilter = flowSet(nil)

// MatchConntrackFlow: the original direction's destination is the VIP,
// and after DNAT the reply comes from the endpoint.
func (s flowSet) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	if f.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	vip, ok1 := addrPort(f.Forward.DstIP, f.Forward.DstPort)
	ep, ok2 := addrPort(f.Reverse.SrcIP, f.Reverse.SrcPort)
	_, ok := s[Flow{vip, ep}]
	return ok1 && ok2 && ok
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
