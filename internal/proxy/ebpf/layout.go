package ebpf

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
)

// svcID names one service address as the hooks see it: the address and
// port the application dials, and the socket's protocol.
type svcID struct {
	addr  netip.Addr
	port  uint16
	proto uint8
}

// beKey is one backend address. Services that share an endpoint share
// its backend entry.
type beKey struct {
	addr  netip.Addr
	port  uint16
	proto uint8
}

// The hooks compare the kernel's network-order fields as they lie in
// memory, so the Go values hold the network-order bytes read in the
// host's order.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func be16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func portOf(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func (s svcID) key(slot uint16) sockSvc4Key {
	return sockSvc4Key{Addr: be32(s.addr), Port: be16(s.port), Proto: s.proto, Slot: slot}
}

func idOfKey(k sockSvc4Key) svcID {
	return svcID{addr: addrOf(k.Addr), port: portOf(k.Port), proto: k.Proto}
}

func (b beKey) value() sockBackend4 {
	return sockBackend4{Addr: be32(b.addr), Port: be16(b.port), Proto: b.proto}
}

func beKeyOf(v sockBackend4) beKey {
	return beKey{addr: addrOf(v.Addr), port: portOf(v.Port), proto: v.Proto}
}

// ownerOf tags a service's head with its cluster, so that a restarted
// daemon knows which entries belong to a cluster it has not synced yet.
func ownerOf(cluster string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(cluster))
	return h.Sum32()
}
