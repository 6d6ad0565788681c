package iptables

import (
	"context"
	"net/netip"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Conntrack forgets the flows conntrack would keep sending where the rules
// no longer do. TCP to a gone endpoint needs nothing: the connection fails
// on its own. A UDP "flow" has no end, so without this a client that keeps
// its source port (a resolver, a syslog sender) would keep sending to a
// dead endpoint for as long as it keeps talking. And a flow that reached a
// ClusterIP before its rules did left this host without DNAT: conntrack
// keeps it so for every later datagram of that UDP client, and for a TCP
// connection that happens to reuse its source port, whose SYN conntrack
// takes for a retransmission of the old one (seen in the soak as
// "network is unreachable" from the router, minutes after the service was
// programmed).
type Conntrack interface {
	// Clear forgets what one sync leaves stale, at once: reading the
	// kernel's table is what costs, so it is read once per family per
	// call, however much there is to forget.
	Clear(ctx context.Context, f Forget) error
}

// Forget is what one sync has conntrack forget.
type Forget struct {
	// UDP are the UDP flows to endpoints that left.
	UDP []Flow
	// Undiverted are the service addresses the sync gave endpoints to that
	// had none programmed before: their flows without DNAT are forgotten,
	// whatever the protocol.
	Undiverted []Portal
}

// Empty says whether there is nothing to forget.
func (f Forget) Empty() bool { return len(f.UDP) == 0 && len(f.Undiverted) == 0 }

// Flow is one UDP flow to forget: sent to VIP (a service address, or a
// node port at one of this host's addresses) and answered by Endpoint.
type Flow struct {
	VIP, Endpoint netip.AddrPort
}

// Portal is a service address and port, of one protocol.
type Portal struct {
	Protocol model.Protocol
	Addr     netip.AddrPort
}
