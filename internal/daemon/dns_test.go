package daemon

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/metrics"
	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// dnsState is alpha with web and, as only an apiserver that validates
// nothing sends, a service whose name cannot be a DNS name.
func dnsState(bad ...string) *model.State {
	c := &model.ClusterState{Name: "alpha", Synced: true, ServiceCIDRs: []netip.Prefix{alphaCIDR}, Ports: map[model.PortKey]*model.ServicePort{}}
	for i, name := range append([]string{"web"}, bad...) {
		k := model.PortKey{Cluster: "alpha", Namespace: "ns", Name: name, Port: "http", Protocol: model.TCP}
		c.Ports[k] = &model.ServicePort{Key: k, ClusterIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(10 + i)}), Port: 80}
	}
	return &model.State{Clusters: []*model.ClusterState{c}}
}

// TestDNSServerObserved: the server's queries reach the metrics and
// status by cluster and rcode, status lists its zones and the names left
// out, and the log says when those change, not at every sync.
func TestDNSServerObserved(t *testing.T) {
	m := metrics.New(metrics.Options{Version: "1", Mode: "iptables", DNS: true})
	var log logBuffer
	clusters := []config.Cluster{{Name: "alpha", DNSZone: "alpha.internal", DNSDefault: true, ServiceCIDRs: []netip.Prefix{alphaCIDR}}}
	s := newDNSServer(config.DNS{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, TTL: 5 * time.Second},
		func() []config.Cluster { return clusters }, m, slog.New(slog.NewTextHandler(&log, nil)))
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	bad := dnsState("Bad.name")
	for range 3 {
		if err := s.Sync(t.Context(), bad); err != nil {
			t.Fatal(err)
		}
		s.built()
	}
	if n := strings.Count(log.String(), "left out"); n != 1 {
		t.Errorf("the names left out logged %d times over 3 syncs of one state, want once:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), `count=1 first=[alpha/ns/Bad.name:http]`) {
		t.Errorf("the log does not name the port left out:\n%s", log.String())
	}

	addr := s.srv.Addrs()[0].String()
	for name, want := range map[string]int{
		"web.ns.svc.alpha.internal.":  dns.RcodeSuccess,
		"web.ns.svc.cluster.local.":   dns.RcodeSuccess,
		"nope.ns.svc.alpha.internal.": dns.RcodeNameError,
		"10.0.96.10.in-addr.arpa.":    dns.RcodeSuccess,
		"example.com.":                dns.RcodeRefused,
	} {
		req := new(dns.Msg)
		req.SetQuestion(name, dns.TypeA)
		if strings.HasSuffix(name, ".arpa.") {
			req.SetQuestion(name, dns.TypePTR)
		}
		r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(req, addr)
		if err != nil || r.Rcode != want {
			t.Fatalf("%s: %v %v", name, r, err)
		}
	}

	// Too short for a header, and a reply: neither is answered, both
	// are counted.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reply := new(dns.Msg)
	reply.SetQuestion("web.ns.svc.alpha.internal.", dns.TypeA)
	reply.Response = true
	packed, err := reply.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{{0, 1, 2, 3, 4}, packed} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}

	// Each query is observed once its answer is sent: wait for the last.
	var st *status.DNS
	deadline := time.Now().Add(2 * time.Second)
	for st = s.status(); (total(st.Queries) < 5 || len(st.Dropped) == 0 || st.Dropped[0].Count < 2) && time.Now().Before(deadline); st = s.status() {
		time.Sleep(10 * time.Millisecond)
	}
	if want := []status.RcodeCount{{Rcode: "NOERROR", Count: 3}, {Rcode: "NXDOMAIN", Count: 1}, {Rcode: "REFUSED", Count: 1}}; !slices.Equal(st.Queries, want) {
		t.Errorf("status queries %+v, want %+v", st.Queries, want)
	}
	if want := []status.DropCount{{Reason: "malformed", Count: 2}}; !slices.Equal(st.Dropped, want) {
		t.Errorf("status dropped %+v, want %+v", st.Dropped, want)
	}
	if got := metricValue(t, m, "kube_outpost_dns_dropped_total", "reason", "malformed"); got != 2 {
		t.Errorf("kube_outpost_dns_dropped_total{reason=malformed} = %v, want 2", got)
	}
	if len(st.Zones) != 1 || !slices.Equal(st.Zones[0].Zones, []string{"alpha.internal", "cluster.local"}) ||
		!slices.Equal(st.Zones[0].Reverse, []string{"96.10.in-addr.arpa"}) {
		t.Errorf("status zones %+v", st.Zones)
	}
	// web in both zones is two names.
	if st.Names != 2 || st.Skipped != 1 || !slices.Equal(st.SkippedFirst, []string{"alpha/ns/Bad.name:http"}) || !slices.Equal(st.Listen, []string{"127.0.0.1:0"}) {
		t.Errorf("status %+v", st)
	}
	for labels, want := range map[[2]string]float64{{"alpha", "NOERROR"}: 3, {"alpha", "NXDOMAIN"}: 1, {"", "REFUSED"}: 1, {"", "NOERROR"}: -1} {
		if got := metricValue(t, m, "kube_outpost_dns_queries_total", "cluster", labels[0], "rcode", labels[1]); got != want {
			t.Errorf("kube_outpost_dns_queries_total%v = %v, want %v", labels, got, want)
		}
	}
	if got := metricValue(t, m, "kube_outpost_dns_query_duration_seconds"); got != 5 {
		t.Errorf("%v latencies observed, want 5", got)
	}

	// Fixed: said once; the same again: nothing.
	for range 2 {
		if err := s.Sync(t.Context(), dnsState()); err != nil {
			t.Fatal(err)
		}
		s.built()
	}
	if n := strings.Count(log.String(), "valid DNS name again"); n != 1 {
		t.Errorf("the fix logged %d times, want once:\n%s", n, log.String())
	}
}

func total(qs []status.RcodeCount) uint64 {
	var n uint64
	for _, q := range qs {
		n += q.Count
	}
	return n
}

// built waits until the server answers from the last state given (or a
// newer one): Sync hands the state to the builder and returns.
func (s *dnsServer) built() {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	for s.done < s.given {
		s.bcond.Wait()
	}
}
