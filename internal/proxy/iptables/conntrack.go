package iptables

import (
	"context"
	"net/netip"
)

// Conntrack forgets UDP flows to endpoints that left. TCP needs nothing: a
// connection to a gone endpoint fails on its own. A UDP "flow" has no end,
// so without this a client that keeps its source port (a resolver, a
// syslog sender) would keep sending to a dead endpoint for as long as it
// keeps talking.
type Conntrack interface {
	// ClearUDP forgets the UDP flows of a whole sync at once: reading the
	// kernel's table is what costs, so it is read once per family per
	// call, however many flows there are.
	ClearUDP(ctx context.Context, flows []Flow) error
}

// Flow is one UDP flow to forget: sent to VIP (a service address, or a
// node port at one of this host's addresses) and answered by Endpoint.
type Flow struct {
	VIP, Endpoint netip.AddrPort
}
