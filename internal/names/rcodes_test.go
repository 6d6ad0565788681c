package names

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// Every rcode Answer gives has its own name in Rcodes; any other is OTHER.
func TestRcodeName(t *testing.T) {
	for _, rc := range []int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeServerFailure, dns.RcodeRefused,
		dns.RcodeFormatError, dns.RcodeNotImplemented, dns.RcodeBadVers} {
		name := RcodeName(rc)
		if name != dns.RcodeToString[rc] || !slices.Contains(Rcodes, name) {
			t.Errorf("rcode %d: %q, want %q in Rcodes", rc, name, dns.RcodeToString[rc])
		}
	}
	if got := RcodeName(dns.RcodeYXDomain); got != "OTHER" || !slices.Contains(Rcodes, got) {
		t.Errorf("YXDOMAIN: %q", got)
	}
}
