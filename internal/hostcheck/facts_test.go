package hostcheck

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestGateways(t *testing.T) {
	got := Gateways([]Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1")},
		{Dst: netip.MustParsePrefix("::/0"), Gateway: netip.MustParseAddr("fe80::1")},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1")},   // a second metric
		{Dst: netip.MustParsePrefix("10.9.0.0/16"), Gateway: netip.MustParseAddr("10.0.0.9")}, // not a default route
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Link: "wg0", Connected: true},               // no gateway
	})
	want := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fe80::1")}
	if !slices.Equal(got, want) {
		t.Fatalf("Gateways = %v, want %v", got, want)
	}
}

func TestResolvers(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	b := filepath.Join(dir, "b")
	os.WriteFile(a, []byte("# comment\nsearch example.org\nnameserver 10.0.0.53\nnameserver fe80::53%eth0\nnameserver bogus\noptions edns0\n"), 0o644)
	os.WriteFile(b, []byte("nameserver 10.0.0.53\nnameserver 192.0.2.1\n"), 0o644)
	got := Resolvers(a, b, filepath.Join(dir, "missing"))
	want := []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fe80::53")}
	if !slices.Equal(got, want) {
		t.Fatalf("Resolvers = %v, want %v", got, want)
	}
}

func TestAPIServerAddr(t *testing.T) {
	for server, want := range map[string]string{
		"https://10.0.0.5:6443":   "10.0.0.5",
		"https://[fd00::5]:6443":  "fd00::5",
		"https://10.0.0.5":        "10.0.0.5",
		"https://api.example:443": "",
		"::not a url":             "",
	} {
		ip, ok := APIServerAddr(server)
		if (want == "") == ok || (ok && ip.String() != want) {
			t.Errorf("APIServerAddr(%q) = %v, %v; want %q", server, ip, ok, want)
		}
	}
}
