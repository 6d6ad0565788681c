package names

import (
	"cmp"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// TestServer: real UDP and TCP sockets on loopback; an index set while
// serving answers the next query.
func TestServer(t *testing.T) {
	type observed struct {
		cluster string
		rcode   int
	}
	answered := make(chan observed, 16)
	s := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second, Log: slog.New(slog.DiscardHandler),
		Answered: func(cluster string, rcode int, _ time.Duration) { answered <- observed{cluster, rcode} }})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	addrs := s.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("bound %v, want UDP and TCP", addrs)
	}
	query := func(net, addr string) *dns.Msg {
		t.Helper()
		req := new(dns.Msg)
		req.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
		m, _, err := (&dns.Client{Net: net, Timeout: 2 * time.Second}).Exchange(req, addr)
		if err != nil {
			t.Fatalf("%s: %v", net, err)
		}
		return m
	}
	// Before the first index: no zone is known, so the name is refused;
	// then the zones of clusters not synced yet fail, to be asked again.
	if m := query("udp", addrs[0].String()); m.Rcode != dns.RcodeRefused {
		t.Errorf("before an index: %s", dns.RcodeToString[m.Rcode])
	}
	s.Set(Build(&model.State{}, testZones))
	if m := query("tcp", addrs[1].String()); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("before the clusters synced: %s", dns.RcodeToString[m.Rcode])
	}
	s.Set(Build(testState(), testZones))
	for i, net := range []string{"udp", "tcp"} {
		m := query(net, addrs[i].String())
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "10.96.0.10" || m.Answer[0].Header().Ttl != 5 {
			t.Errorf("%s: %v", net, m)
		}
	}
	st := testState()
	st.Clusters[0].Ports = nil
	s.Set(Build(st, testZones))
	if m := query("udp", addrs[0].String()); m.Rcode != dns.RcodeNameError {
		t.Errorf("after the service went: %s", dns.RcodeToString[m.Rcode])
	}
	// Each is observed after its answer is sent, so the client's next
	// query may be observed first: compared in any order.
	want := []observed{{"", dns.RcodeRefused}, {"prod", dns.RcodeServerFailure}, {"prod", dns.RcodeSuccess}, {"prod", dns.RcodeSuccess}, {"prod", dns.RcodeNameError}}
	var got []observed
	for range want {
		select {
		case o := <-answered:
			got = append(got, o)
		case <-time.After(2 * time.Second):
			t.Fatalf("observed %+v, want %+v", got, want)
		}
	}
	byValue := func(a, b observed) int {
		return cmp.Or(strings.Compare(a.cluster, b.cluster), cmp.Compare(a.rcode, b.rcode))
	}
	slices.SortFunc(got, byValue)
	slices.SortFunc(want, byValue)
	if !slices.Equal(got, want) {
		t.Errorf("observed %+v, want %+v", got, want)
	}
}

// A busy address stops the start, naming it, and leaves nothing bound.
func TestServerAddressInUse(t *testing.T) {
	first := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, Log: slog.New(slog.DiscardHandler)})
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	busy := netip.MustParseAddrPort(first.Addrs()[0].String())
	second := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.2:0"), busy}, Log: slog.New(slog.DiscardHandler)})
	err := second.Start(t.Context())
	if err == nil {
		second.Stop()
		t.Fatal("started on a busy address")
	}
	if want := "dns: listen on " + busy.String() + "/udp"; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
	if got := second.Addrs(); len(got) != 0 {
		t.Errorf("left bound: %v", got)
	}
}
