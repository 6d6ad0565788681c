package names

import "github.com/miekg/dns"

// Rcodes are the names RcodeName gives: those dig prints for the rcodes
// Answer gives, and OTHER. A fixed set, so that a metric or a status
// line labelled by rcode stays small whatever the queries are.
var Rcodes = []string{"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "BADVERS", "OTHER"}

// RcodeName is the name of rcode among Rcodes, or "OTHER" for one that
// Answer does not give.
func RcodeName(rcode int) string {
	switch rcode {
	case dns.RcodeSuccess:
		return "NOERROR"
	case dns.RcodeNameError:
		return "NXDOMAIN"
	case dns.RcodeServerFailure:
		return "SERVFAIL"
	case dns.RcodeRefused:
		return "REFUSED"
	case dns.RcodeFormatError:
		return "FORMERR"
	case dns.RcodeNotImplemented:
		return "NOTIMP"
	case dns.RcodeBadVers:
		return "BADVERS"
	}
	return "OTHER"
}
