package resolved

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

// TestStoreProperties: the link properties as godbus hands them over
// (structs as []any inside a Variant) fit the types Link reads them into.
func TestStoreProperties(t *testing.T) {
	var servers []dnsServerEx
	v := dbus.MakeVariant([][]any{{int32(2), []byte{127, 0, 0, 153}, uint16(53), ""}})
	if err := dbus.Store([]any{v.Value()}, &servers); err != nil || len(servers) != 1 || servers[0].Port != 53 {
		t.Fatalf("DNSEx: %v %+v", err, servers)
	}
	var domains []linkDomain
	v = dbus.MakeVariant([][]any{{"prod.internal", true}})
	if err := dbus.Store([]any{v.Value()}, &domains); err != nil || len(domains) != 1 || !domains[0].RoutingOnly {
		t.Fatalf("Domains: %v %+v", err, domains)
	}
}

// TestSignatures: the arguments marshal to the signatures of
// org.freedesktop.resolve1.Manager's methods.
func TestSignatures(t *testing.T) {
	for want, v := range map[string]any{
		"a(iay)":   []dnsServer{},
		"a(iayqs)": []dnsServerEx{},
		"a(sb)":    domainsArg(nil),
	} {
		if got := dbus.SignatureOf(v).String(); got != want {
			t.Errorf("%T: signature %s, want %s", v, got, want)
		}
	}
}
