package names

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// oobSize holds the one control message asked for, SO_RXQ_OVFL's count.
var oobSize = unix.CmsgSpace(4)

// listenUDP binds a UDP socket that tells, with each datagram, how many
// the kernel has dropped for want of room in its buffer: the queries a
// flood loses, which no read ever sees.
func listenUDP(ctx context.Context, lc *net.ListenConfig, a netip.AddrPort) (*net.UDPConn, error) {
	withOvfl := *lc
	withOvfl.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
		}); err != nil {
			return err
		}
		return serr
	}
	pc, err := withOvfl.ListenPacket(ctx, "udp", a.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// overflowOf is the kernel's count of drops in a datagram's control
// messages; false when there is none (nothing dropped yet).
func overflowOf(oob []byte) (uint32, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_RXQ_OVFL && len(m.Data) >= 4 {
			return binary.NativeEndian.Uint32(m.Data), true
		}
	}
	return 0, false
}
