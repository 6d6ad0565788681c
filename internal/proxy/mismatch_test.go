package proxy

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestShareMismatches(t *testing.T) {
	a, b, c := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("10.0.0.3:80")
	want := []WantEndpoint{{Addr: a, EndpointShare: EndpointShare{Probability: 0.5}}, {Addr: b, EndpointShare: EndpointShare{Probability: 0.5}}}
	// a twice (shares added up: right), b missing, c extra and listed once.
	kernel := []KernelShare{{a, 0.25}, {c, 0.25}, {a, 0.25}, {c, 0.25}}
	got := ShareMismatches(want, kernel, 1e-9, "rule")
	exp := []string{
		"endpoint 10.0.0.2:80 is wanted, but no rule DNATs to it",
		"the kernel DNATs 50.0% of new connections to 10.0.0.3:80, which the model does not want",
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("got %q\nwant %q", got, exp)
	}
	if got := ShareMismatches(want, []KernelShare{{a, 0.5}, {b, 0.5}}, 1e-9, "rule"); got != nil {
		t.Errorf("agreeing shares: %q", got)
	}
}
