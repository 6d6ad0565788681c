package ebpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"
)

// TestLayout: the Go values hold the bytes the hooks compare, in
// network order as they lie in memory, and read back to the same keys.
func TestLayout(t *testing.T) {
	k := slotKey{svcID{addr: netip.MustParseAddr("10.96.0.10"), port: 53, proto: 17}, 3}
	k4 := key4(k)
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&k4)), unsafe.Sizeof(k4))
	if want := []byte{10, 96, 0, 10, 0, 53, 17, 0}; string(raw[:8]) != string(want) {
		t.Errorf("svc4_key starts % x, want % x", raw[:8], want)
	}
	if binary.NativeEndian.Uint16(raw[8:]) != 3 {
		t.Errorf("the slot is not in host order: % x", raw[8:10])
	}
	if got := slotKeyOf4(k4); got != k {
		t.Errorf("%v reads back as %v", k, got)
	}
	k6 := slotKey{svcID{addr: netip.MustParseAddr("fd00:96::10"), port: 443, proto: 6}, 0}
	v6 := key6(k6)
	raw6 := unsafe.Slice((*byte)(unsafe.Pointer(&v6)), unsafe.Sizeof(v6))
	if a := k6.svc.addr.As16(); string(raw6[:16]) != string(a[:]) || raw6[16] != 1 || raw6[17] != 187 {
		t.Errorf("svc6_key is % x", raw6)
	}
	if got := slotKeyOf6(v6); got != k6 {
		t.Errorf("%v reads back as %v", k6, got)
	}
	b := beKey{addr: netip.MustParseAddr("fd00::1"), port: 8080, proto: 6}
	if got := beKeyOf6(backend6(b)); got != b {
		t.Errorf("%v reads back as %v", b, got)
	}
	b4 := beKey{addr: netip.MustParseAddr("10.1.2.3"), port: 8080, proto: 6}
	if got := beKeyOf4(backend4(b4)); got != b4 {
		t.Errorf("%v reads back as %v", b4, got)
	}
}
