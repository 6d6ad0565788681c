package names

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// Every rcode Answer gives has its own name in Rcodes; any other is OTHER.
func TestRcodeName(t *testing.T) {
	for rc, want := range map[int]string{dns.RcodeSuccess: "NOERROR", dns.RcodeNameError: "NXDOMAIN", dns.RcodeServerFailure: "SERVFAIL",
		dns.RcodeRefused: "REFUSED", dns.RcodeFormatError: "FORMERR", dns.RcodeNotImplemented: "NOTIMP",
		// 16 is BADSIG in a TSIG record, BADVERS in Answer's EDNS reply.
		dns.RcodeBadVers: "BADVERS"} {
		if name := RcodeName(rc); name != want || !slices.Contains(Rcodes, name) {
			t.Errorf("rcode %d: %q, want %q in Rcodes", rc, name, want)
		}
	}
	if got := RcodeName(dns.RcodeYXDomain); got != "OTHER" || !slices.Contains(Rcodes, got) {
		t.Errorf("YXDOMAIN: %q", got)
	}
}
