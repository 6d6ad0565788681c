package names

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func TestReverseZones(t *testing.T) {
	for _, c := range []struct {
		ranges []string
		want   []string
	}{
		{[]string{"10.96.0.0/16"}, []string{"96.10.in-addr.arpa"}},
		{[]string{"10.96.0.0/24"}, []string{"0.96.10.in-addr.arpa"}},
		{[]string{"10.96.0.0/12"}, []string{"96.10.in-addr.arpa", "97.10.in-addr.arpa", "98.10.in-addr.arpa", "99.10.in-addr.arpa",
			"100.10.in-addr.arpa", "101.10.in-addr.arpa", "102.10.in-addr.arpa", "103.10.in-addr.arpa", "104.10.in-addr.arpa",
			"105.10.in-addr.arpa", "106.10.in-addr.arpa", "107.10.in-addr.arpa", "108.10.in-addr.arpa", "109.10.in-addr.arpa",
			"110.10.in-addr.arpa", "111.10.in-addr.arpa"}},
		{[]string{"10.96.254.0/23"}, []string{"254.96.10.in-addr.arpa", "255.96.10.in-addr.arpa"}},
		// The block after the last one carries into the byte above.
		{[]string{"10.254.0.0/15", "10.97.0.0/24"}, []string{"254.10.in-addr.arpa", "255.10.in-addr.arpa", "0.97.10.in-addr.arpa"}},
		// Not masked, as config never gives: the range it stands for.
		{[]string{"10.96.1.7/23"}, []string{"0.96.10.in-addr.arpa", "1.96.10.in-addr.arpa"}},
		{[]string{"fd00:96::/112"}, []string{"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa"}},
		{[]string{"fd00:96::/111"}, []string{"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa",
			"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa"}},
		// The same range twice, as two clusters' local ranges never are, gives its zone once.
		{[]string{"10.96.0.0/16", "10.96.0.0/16"}, []string{"96.10.in-addr.arpa"}},
	} {
		var ranges []netip.Prefix
		for _, r := range c.ranges {
			ranges = append(ranges, netip.MustParsePrefix(r))
		}
		if got := ReverseZones(ranges); !slices.Equal(got, c.want) {
			t.Errorf("%v: %q, want %q", c.ranges, got, c.want)
		}
	}
}

// The zones forwarded are the server's: the PTR of an address at the
// start and the end of each is answered, and those just outside refused.
func TestReverseZonesAreAnswered(t *testing.T) {
	ix := Build(testState(), testZones)
	for _, z := range ReverseZones([]netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.196.0.0/16")}) {
		for _, first := range []string{"0.0.", "255.255."} {
			if m := ask(t, ix, first+z+".", dns.TypePTR); m.Rcode == dns.RcodeRefused {
				t.Errorf("%s%s refused", first, z)
			}
		}
	}
	for _, outside := range []string{"255.255.95.10.in-addr.arpa.", "0.0.97.10.in-addr.arpa."} {
		if m := ask(t, ix, outside, dns.TypePTR); m.Rcode != dns.RcodeRefused {
			t.Errorf("%s: %s, want REFUSED", outside, dns.RcodeToString[m.Rcode])
		}
	}
}
