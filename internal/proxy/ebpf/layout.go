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

// slotKey is one entry of a service map: slot 0 is the service's head.
type slotKey struct {
	svc  svcID
	slot uint16
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

// be128 is an IPv6 address as the hooks' __be32[4].
func be128(a netip.Addr) [4]uint32 {
	b := a.As16()
	var out [4]uint32
	for i := range out {
		out[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return out
}

func addr6Of(v [4]uint32) netip.Addr {
	var b [16]byte
	for i, w := range v {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrFrom16(b)
}

func key4(k slotKey) sockSvc4Key {
	return sockSvc4Key{Addr: be32(k.svc.addr), Port: be16(k.svc.port), Proto: k.svc.proto, Slot: k.slot}
}

func slotKeyOf4(k sockSvc4Key) slotKey {
	return slotKey{svcID{addr: addrOf(k.Addr), port: portOf(k.Port), proto: k.Proto}, k.Slot}
}

func key6(k slotKey) sockSvc6Key {
	return sockSvc6Key{Addr: be128(k.svc.addr), Port: be16(k.svc.port), Proto: k.svc.proto, Slot: k.slot}
}

func slotKeyOf6(k sockSvc6Key) slotKey {
	return slotKey{svcID{addr: addr6Of(k.Addr), port: portOf(k.Port), proto: k.Proto}, k.Slot}
}

func backend4(b beKey) sockBackend4 {
	return sockBackend4{Addr: be32(b.addr), Port: be16(b.port), Proto: b.proto}
}

func beKeyOf4(v sockBackend4) beKey {
	return beKey{addr: addrOf(v.Addr), port: portOf(v.Port), proto: v.Proto}
}

func backend6(b beKey) sockBackend6 {
	return sockBackend6{Addr: be128(b.addr), Port: be16(b.port), Proto: b.proto}
}

func beKeyOf6(v sockBackend6) beKey {
	return beKey{addr: addr6Of(v.Addr), port: portOf(v.Port), proto: v.Proto}
}

// ownerOf tags a service's head with its cluster, so that a restarted
// daemon knows which entries belong to a cluster it has not synced yet.
func ownerOf(cluster string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(cluster))
	return h.Sum32()
}
