//go:build linux

package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernel is the real Kernel, over rtnetlink.
type kernel struct {
	h *netlink.Handle
}

// NewKernel returns the real Kernel on h: a handle made with
// netlink.NewHandleAt works on that network namespace from any thread. nil
// uses netlink's package handle, whose sockets are opened in the namespace
// of the calling thread, i.e. the daemon's own.
func NewKernel(h *netlink.Handle) Kernel {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &kernel{h: h}
}

// dumpRetries bounds how often a listing interrupted by concurrent changes
// is repeated: an interrupted dump may miss routes, and a diff against it
// could re-add what exists or, worse, miss a foreign route.
const dumpRetries = 5

func (k *kernel) Routes(v6 bool) ([]KernelRoute, error) {
	fam := netlink.FAMILY_V4
	if v6 {
		fam = netlink.FAMILY_V6
	}
	var list []netlink.Route
	var err error
	for range dumpRetries {
		list, err = k.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	out := make([]KernelRoute, 0, len(list))
	for _, r := range list {
		dst, ok := prefixOf(r.Dst)
		if !ok {
			continue // not an IP route (MPLS)
		}
		kr := KernelRoute{Dst: dst, Protocol: int(r.Protocol), Metric: r.Priority, Multipath: len(r.MultiPath) > 0}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok && len(r.MultiPath) == 0 {
			kr.Via = gw.Unmap()
		}
		if r.Type != unix.RTN_UNICAST {
			kr.Type = routeType(r.Type)
		}
		out = append(out, kr)
	}
	return out, nil
}

func (k *kernel) Add(r KernelRoute) error     { return k.h.RouteAdd(toNetlink(r)) }
func (k *kernel) Replace(r KernelRoute) error { return k.h.RouteReplace(toNetlink(r)) }
func (k *kernel) Delete(r KernelRoute) error  { return k.h.RouteDel(toNetlink(r)) }

func (k *kernel) LocalPrefixes() ([]netip.Prefix, error) {
	addrs, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	if err != nil {
		// Retried once: a partial list could let a route shadow a
		// network that is connected.
		if addrs, err = k.h.AddrList(nil, netlink.FAMILY_ALL); err != nil {
			return nil, err
		}
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
		if p, ok := prefixOf(a.Peer); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func toNetlink(r KernelRoute) *netlink.Route {
	bits := 32
	if r.Dst.Addr().Is6() {
		bits = 128
	}
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), bits)},
		Protocol: netlink.RouteProtocol(r.Protocol),
		Priority: r.Metric,
		Table:    unix.RT_TABLE_MAIN,
	}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
	}
	return nr
}

// prefixOf converts an address with its mask (the address itself is kept:
// for LocalPrefixes it is the host's address; routes have none set).
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, size := n.Mask.Size()
	if size == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.Is4() && size == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

func routeType(t int) string {
	switch t {
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_MULTICAST:
		return "multicast"
	}
	return fmt.Sprintf("type %d", t)
}
