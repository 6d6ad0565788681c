package names

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// testState: prod has web (http, metrics), dns (dns over UDP and TCP,
// named the same) and an unnamed port; dev has the same service range,
// reached at a local range, and a service with a name no apiserver should
// send; stale has not synced.
func testState() *model.State {
	port := func(cluster, ns, name, p string, proto model.Protocol, vip, local string, num uint16) *model.ServicePort {
		sp := &model.ServicePort{Key: model.PortKey{Cluster: cluster, Namespace: ns, Name: name, Port: p, Protocol: proto},
			ClusterIP: netip.MustParseAddr(vip), Port: num}
		if local != "" {
			sp.LocalIP = netip.MustParseAddr(local)
		}
		if sp.ClusterIP.Is6() {
			sp.Key.IPv6 = true
		}
		return sp
	}
	ports := func(ps ...*model.ServicePort) map[model.PortKey]*model.ServicePort {
		m := map[model.PortKey]*model.ServicePort{}
		for _, p := range ps {
			m[p.Key] = p
		}
		return m
	}
	return &model.State{Clusters: []*model.ClusterState{{
		Name: "prod", Synced: true,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/112")},
		Ports: ports(
			port("prod", "shop", "web", "http", model.TCP, "10.96.0.10", "", 80),
			port("prod", "shop", "web", "metrics", model.TCP, "10.96.0.10", "", 9100),
			port("prod", "shop", "web", "http", model.TCP, "fd00:96::10", "", 80),
			port("prod", "kube-system", "dns", "dns", model.UDP, "10.96.0.53", "", 53),
			port("prod", "kube-system", "dns", "dns", model.TCP, "10.96.0.53", "", 53),
			port("prod", "shop", "plain", "", model.TCP, "10.96.0.20", "", 8080),
		),
	}, {
		Name: "dev", Synced: true,
		ServiceCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		LocalServiceCIDR: netip.MustParsePrefix("10.196.0.0/16"),
		Ports: ports(
			port("dev", "shop", "web", "http", model.TCP, "10.96.0.10", "10.196.0.10", 80),
			port("dev", "shop", "Evil.name", "http", model.TCP, "10.96.0.11", "10.196.0.11", 80),
		),
	}, {
		Name: "stale", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.100.0.0/16")},
		Ports: ports(port("stale", "shop", "web", "http", model.TCP, "10.100.0.10", "", 80)),
	}}}
}

var testZones = Zones{"prod": {"prod.internal", "cluster.local"}, "dev": {"dev.internal"}, "stale": {"stale.internal"}}

func ask(t *testing.T, ix *Index, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	m := Answer(ix, req, 5)
	if m == nil {
		t.Fatalf("%s %s: no answer", name, dns.TypeToString[qtype])
	}
	if m.Id != req.Id || !m.Response {
		t.Fatalf("%s: not a reply to the query: %v", name, m)
	}
	return m
}

// rrs writes the answer section as "type value" lines, sorted.
func rrs(section []dns.RR) []string {
	var out []string
	for _, rr := range section {
		_, v, _ := strings.Cut(strings.TrimPrefix(rr.String(), rr.Header().String()), "")
		out = append(out, dns.TypeToString[rr.Header().Rrtype]+" "+strings.TrimSpace(v))
	}
	slices.Sort(out)
	return out
}

func TestAnswer(t *testing.T) {
	ix := Build(testState(), testZones)
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // the answer section
		soa   string   // the SOA in the authority section, for NXDOMAIN and NODATA
	}{
		{"web.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.10"}, ""},
		{"WEB.Shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.10"}, ""},
		{"web.shop.svc.prod.internal.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00:96::10"}, ""},
		{"web.shop.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.10"}, ""},
		// The same name in the other cluster is its local address.
		{"web.shop.svc.dev.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.196.0.10"}, ""},
		{"plain.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.20"}, ""},
		{"_http._tcp.web.shop.svc.prod.internal.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"SRV 0 100 80 web.shop.svc.prod.internal."}, ""},
		{"_dns._udp.dns.kube-system.svc.prod.internal.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"SRV 0 100 53 dns.kube-system.svc.prod.internal."}, ""},
		{"_dns._tcp.dns.kube-system.svc.prod.internal.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"SRV 0 100 53 dns.kube-system.svc.prod.internal."}, ""},
		// A name that exists without records of the type: NODATA.
		{"dns.kube-system.svc.prod.internal.", dns.TypeAAAA, dns.RcodeSuccess, nil, "prod.internal."},
		{"shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, nil, "prod.internal."},
		{"_tcp.web.shop.svc.prod.internal.", dns.TypeSRV, dns.RcodeSuccess, nil, "prod.internal."},
		{"prod.internal.", dns.TypeSOA, dns.RcodeSuccess, []string{"SOA kube-outpost.prod.internal. hostmaster.prod.internal. 1 3600 600 86400 5"}, ""},
		// Unknown names in our zones: NXDOMAIN with the SOA.
		{"nope.shop.svc.prod.internal.", dns.TypeA, dns.RcodeNameError, nil, "prod.internal."},
		{"_https._tcp.web.shop.svc.prod.internal.", dns.TypeSRV, dns.RcodeNameError, nil, "prod.internal."},
		// A cluster whose services are not known yet: try again soon.
		{"web.shop.svc.stale.internal.", dns.TypeA, dns.RcodeServerFailure, nil, ""},
		{"evil.name.shop.svc.dev.internal.", dns.TypeA, dns.RcodeNameError, nil, "dev.internal."},
		// Outside: refused, never forwarded.
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil, ""},
		{"internal.", dns.TypeA, dns.RcodeRefused, nil, ""},
		{"xprod.internal.", dns.TypeA, dns.RcodeRefused, nil, ""},
		// Reverse names of the service ranges.
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess,
			[]string{"PTR web.shop.svc.cluster.local.", "PTR web.shop.svc.prod.internal."}, ""},
		{"10.0.196.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"PTR web.shop.svc.dev.internal."}, ""},
		{"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, dns.RcodeSuccess,
			[]string{"PTR web.shop.svc.cluster.local.", "PTR web.shop.svc.prod.internal."}, ""},
		{"99.0.96.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil, "96.10.in-addr.arpa."},
		{"1.1.168.192.in-addr.arpa.", dns.TypePTR, dns.RcodeRefused, nil, ""},
	} {
		t.Run(c.name+"/"+dns.TypeToString[c.qtype], func(t *testing.T) {
			m := ask(t, ix, c.name, c.qtype)
			if m.Rcode != c.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
			}
			if got := rrs(m.Answer); !slices.Equal(got, c.want) {
				t.Errorf("answer %q, want %q", got, c.want)
			}
			soa := ""
			if len(m.Ns) == 1 {
				soa = m.Ns[0].Header().Name
			}
			if soa != c.soa || len(m.Ns) > 1 {
				t.Errorf("authority %v, want the SOA of %q", m.Ns, c.soa)
			}
			if m.Authoritative != (c.rcode != dns.RcodeRefused && c.rcode != dns.RcodeServerFailure) || m.RecursionAvailable {
				t.Errorf("AA %v RA %v", m.Authoritative, m.RecursionAvailable)
			}
		})
	}
}

func TestAnswerSRVGivesAddresses(t *testing.T) {
	m := ask(t, Build(testState(), testZones), "_http._tcp.web.shop.svc.prod.internal.", dns.TypeSRV)
	if got, want := rrs(m.Extra), []string{"A 10.96.0.10", "AAAA fd00:96::10"}; !slices.Equal(got, want) {
		t.Errorf("additional %q, want %q", got, want)
	}
}

func TestAnswerOddMessages(t *testing.T) {
	ix := Build(testState(), testZones)
	req := new(dns.Msg)
	req.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	req.Response = true
	if m := Answer(ix, req, 5); m != nil {
		t.Errorf("a reply was answered: %v", m)
	}
	req = new(dns.Msg)
	req.SetNotify("prod.internal.")
	if m := Answer(ix, req, 5); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %s", dns.RcodeToString[m.Rcode])
	}
	req = new(dns.Msg)
	req.Question = nil
	if m := Answer(ix, req, 5); m.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %s", dns.RcodeToString[m.Rcode])
	}
	req = new(dns.Msg)
	req.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	req.Question[0].Qclass = dns.ClassCHAOS
	if m := Answer(ix, req, 5); m.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: %s", dns.RcodeToString[m.Rcode])
	}
	req = new(dns.Msg)
	req.SetQuestion("web.shop.svc.prod.internal.", dns.TypeA)
	req.SetEdns0(4096, false)
	req.IsEdns0().SetVersion(1)
	if m := Answer(ix, req, 5); m.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s", dns.RcodeToString[m.Rcode])
	}
}

func TestBuildSkipsBadNames(t *testing.T) {
	ix := Build(testState(), testZones)
	if n, first := ix.Skipped(5); n != 1 || !slices.Equal(first, []string{"dev/shop/Evil.name:http"}) {
		t.Errorf("skipped %d %q, want 1 (Evil.name)", n, first)
	}
	if n, first := ix.Skipped(0); n != 1 || len(first) != 0 {
		t.Errorf("skipped %d %q with no examples asked for", n, first)
	}
	if !ix.SameSkipped(Build(testState(), testZones)) {
		t.Error("two builds of one state skip differently")
	}
	if ix.SameSkipped(Build(&model.State{}, testZones)) {
		t.Error("a state without the bad name skips the same")
	}
	if got, want := ix.Zones(), []string{"cluster.local", "dev.internal", "prod.internal", "stale.internal"}; !slices.Equal(got, want) {
		t.Errorf("zones %v, want %v", got, want)
	}
}
