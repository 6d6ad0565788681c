//go:build !linux

package names

import (
	"context"
	"net"
	"net/netip"
)

// oobSize is nothing: SO_RXQ_OVFL is Linux's.
const oobSize = 0

// listenUDP binds a plain UDP socket: elsewhere the kernel's drops are
// not counted.
func listenUDP(ctx context.Context, lc *net.ListenConfig, a netip.AddrPort) (*net.UDPConn, error) {
	pc, err := lc.ListenPacket(ctx, "udp", a.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func overflowOf([]byte) (uint32, bool) { return 0, false }
