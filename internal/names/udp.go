package names

import (
	"encoding/binary"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// udpWorkers is how many goroutines answer each UDP socket: a flood
// makes no more of them (miekg/dns's server starts one per datagram),
// and what they do not read waits in the socket's buffer, or is dropped
// there by the kernel, counted (DropOverflow). Two, so that one answers
// while the other reads.
const udpWorkers = 2

// maxDatagram holds any UDP payload, so that no query is cut short and
// then misread.
const maxDatagram = 64 << 10

// dnsHeaderSize is a DNS message's fixed header.
const dnsHeaderSize = 12

// udpConn is a UDP socket and the kernel's count of datagrams it dropped
// that was last seen (SO_RXQ_OVFL: cumulative, given with each datagram).
type udpConn struct {
	pc   *net.UDPConn
	ovfl atomic.Uint32
}

// serveUDP reads and answers datagrams until the socket is closed.
func (s *Server) serveUDP(c *udpConn) {
	buf := make([]byte, maxDatagram)
	oob := make([]byte, oobSize)
	for {
		n, oobn, _, from, err := c.pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.opt.Log.Debug("dns: reading a datagram", "err", err)
			continue
		}
		start := time.Now()
		if total, ok := overflowOf(oob[:oobn]); ok {
			s.dropped(DropOverflow, c.sawOverflow(total))
		}
		// The turn is waited with the datagram in hand, so that its
		// latency counts the wait.
		if s.limit.Wait(s.stop) != nil {
			return
		}
		ix := s.ix.Load()
		req, m := s.replyDatagram(ix, buf[:n])
		if m == nil {
			s.dropped(DropMalformed, 1)
			continue
		}
		out, err := m.Pack()
		if err == nil {
			_, err = c.pc.WriteToUDPAddrPort(out, from)
		}
		if err != nil {
			s.opt.Log.Debug("dns answer not sent", "to", from, "err", err)
		}
		s.answered(ix, req, m, start)
	}
}

// sawOverflow records the kernel's cumulative count of drops, as another
// worker may have seen a later one first, and returns how many are new.
func (c *udpConn) sawOverflow(total uint32) int {
	for {
		last := c.ovfl.Load()
		// Signed, so that a count that wrapped still reads as newer.
		if int32(total-last) <= 0 {
			return 0
		}
		if c.ovfl.CompareAndSwap(last, total) {
			return int(total - last)
		}
	}
}

// replyDatagram is the answer to the datagram b and the query it held,
// nil when none is due: b is shorter than a header, or a reply (two
// servers would echo each other). A header followed by what does not
// unpack gets FORMERR, with the header's id, as miekg/dns's server gives.
func (s *Server) replyDatagram(ix *Index, b []byte) (req, m *dns.Msg) {
	if len(b) < dnsHeaderSize || b[2]&0x80 != 0 {
		return nil, nil
	}
	req = new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		// What unpacked of it is not to be trusted: only the header.
		req = &dns.Msg{MsgHdr: dns.MsgHdr{Id: binary.BigEndian.Uint16(b), Opcode: int(b[2]>>3) & 0xf, RecursionDesired: b[2]&1 != 0}}
		m = new(dns.Msg)
		m.SetRcodeFormatError(req)
		return req, m
	}
	return req, s.reply(ix, req, true)
}
