package names

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// namedState: prod has a headless service db (two endpoints with
// hostnames, one without, one IPv6, named ports that differ per slice), a
// headless service with no endpoint left, an ExternalName service, and a
// bad hostname; its ports are those of testState.
func namedState() *model.State {
	st := testState()
	peer := []model.NamedPort{{Name: "peer", Protocol: model.TCP, Port: 7000}, {Name: "gossip", Protocol: model.UDP, Port: 7001}}
	other := []model.NamedPort{{Name: "peer", Protocol: model.TCP, Port: 7100}, {Name: "Bad_Port", Protocol: model.TCP, Port: 1}}
	ep := func(a, host string, ports []model.NamedPort) model.NamedEndpoint {
		return model.NamedEndpoint{Addr: netip.MustParseAddr(a), Hostname: host, Ports: ports}
	}
	st.Clusters[0].Names = map[types.NamespacedName]*model.NamedService{
		{Namespace: "shop", Name: "db"}: {Namespace: "shop", Name: "db", Endpoints: []model.NamedEndpoint{
			ep("10.244.0.1", "db-0", peer),
			ep("10.244.0.2", "db-1", peer),
			ep("10.244.0.3", "", other),
			ep("10.244.0.4", "Not A Label", nil),
			ep("fd00:244::5", "db-2", peer),
		}},
		{Namespace: "shop", Name: "empty"}: {Namespace: "shop", Name: "empty"},
		{Namespace: "shop", Name: "ext"}:   {Namespace: "shop", Name: "ext", ExternalName: "db.example.com"},
	}
	return st
}

// TestAnswerNamed: a headless service's name is its endpoints' addresses,
// each endpoint is named on its own (its hostname, else its address with
// dashes), and its named ports' SRV records point at those names with
// each endpoint's own port; an ExternalName is a CNAME, answered for
// every type and never followed.
func TestAnswerNamed(t *testing.T) {
	ix := Build(namedState(), testZones)
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
		soa   string
	}{
		{"db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess,
			[]string{"A 10.244.0.1", "A 10.244.0.2", "A 10.244.0.3", "A 10.244.0.4"}, ""},
		{"db.shop.svc.prod.internal.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00:244::5"}, ""},
		{"db.shop.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess,
			[]string{"A 10.244.0.1", "A 10.244.0.2", "A 10.244.0.3", "A 10.244.0.4"}, ""},
		{"db-0.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.0.1"}, ""},
		{"DB-1.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.0.2"}, ""},
		{"db-2.db.shop.svc.prod.internal.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd00:244::5"}, ""},
		{"db-2.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, nil, "prod.internal."},
		{"10-244-0-3.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.0.3"}, ""},
		// A hostname that is no label: named by its address instead.
		{"10-244-0-4.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.0.4"}, ""},
		{"db-3.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeNameError, nil, "prod.internal."},
		{"10-244-0-1.db.shop.svc.prod.internal.", dns.TypeA, dns.RcodeNameError, nil, "prod.internal."},
		{"_peer._tcp.db.shop.svc.prod.internal.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"SRV 0 100 7000 db-0.db.shop.svc.prod.internal.",
			"SRV 0 100 7000 db-1.db.shop.svc.prod.internal.",
			"SRV 0 100 7000 db-2.db.shop.svc.prod.internal.",
			"SRV 0 100 7100 10-244-0-3.db.shop.svc.prod.internal.",
		}, ""},
		{"_gossip._udp.db.shop.svc.prod.internal.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"SRV 0 100 7001 db-0.db.shop.svc.prod.internal.",
			"SRV 0 100 7001 db-1.db.shop.svc.prod.internal.",
			"SRV 0 100 7001 db-2.db.shop.svc.prod.internal.",
		}, ""},
		{"_gossip._tcp.db.shop.svc.prod.internal.", dns.TypeSRV, dns.RcodeNameError, nil, "prod.internal."},
		// A headless service without endpoints exists, without addresses.
		{"empty.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, nil, "prod.internal."},
		{"ext.shop.svc.prod.internal.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME db.example.com."}, ""},
		{"ext.shop.svc.prod.internal.", dns.TypeAAAA, dns.RcodeSuccess, []string{"CNAME db.example.com."}, ""},
		{"ext.shop.svc.prod.internal.", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME db.example.com."}, ""},
		{"ext.shop.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME db.example.com."}, ""},
		{"x.ext.shop.svc.prod.internal.", dns.TypeA, dns.RcodeNameError, nil, "prod.internal."},
		// The target is not ours to answer.
		{"db.example.com.", dns.TypeA, dns.RcodeRefused, nil, ""},
		// Endpoint addresses are outside the service ranges.
		{"1.0.244.10.in-addr.arpa.", dns.TypePTR, dns.RcodeRefused, nil, ""},
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
		})
	}
}

// TestAnswerNamedSRVGivesAddresses: each SRV target's own address, not
// every endpoint's, so that a client takes the one the record means.
func TestAnswerNamedSRVGivesAddresses(t *testing.T) {
	m := ask(t, Build(namedState(), testZones), "_peer._tcp.db.shop.svc.prod.internal.", dns.TypeSRV)
	want := []string{"A 10.244.0.1", "A 10.244.0.2", "A 10.244.0.3", "AAAA fd00:244::5"}
	if got := rrs(m.Extra); !slices.Equal(got, want) {
		t.Errorf("additional %q, want %q", got, want)
	}
}

// TestBuildNamedSkips: a hostname and a port name that cannot be labels
// are left out and named, once however many zones they would have been in.
func TestBuildNamedSkips(t *testing.T) {
	ix := Build(namedState(), testZones)
	n, first := ix.Skipped(10)
	t.Logf("skipped: %q", first)
	if n != 3 {
		t.Errorf("skipped %d (%q), want 3: Evil.name in dev, Not A Label and Bad_Port in prod", n, first)
	}
}
