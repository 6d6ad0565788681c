package model

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		in   string
		want Query
		str  string // String(), when it differs from in
		err  string
	}{
		{in: "prod/default/web", want: Query{Cluster: "prod", Namespace: "default", Name: "web"}},
		{in: " prod/kube-system/dns ", want: Query{Cluster: "prod", Namespace: "kube-system", Name: "dns"}, str: "prod/kube-system/dns"},
		{in: "10.96.0.10:80/TCP", want: Query{Target: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: TCP}},
		{in: "10.96.0.10:53/udp", want: Query{Target: netip.MustParseAddrPort("10.96.0.10:53"), Protocol: UDP}, str: "10.96.0.10:53/UDP"},
		{in: "10.96.0.10:53", want: Query{Target: netip.MustParseAddrPort("10.96.0.10:53")}},
		{in: "[fd00:96::10]:443/SCTP", want: Query{Target: netip.MustParseAddrPort("[fd00:96::10]:443"), Protocol: SCTP}},
		{in: "[::ffff:10.96.0.10]:80", want: Query{Target: netip.MustParseAddrPort("10.96.0.10:80")}, str: "10.96.0.10:80"},
		{in: "default/web", err: "want CLUSTER/NAMESPACE/NAME"},
		{in: "prod//web", err: "want CLUSTER/NAMESPACE/NAME"},
		{in: "a/b/c/d", err: "want CLUSTER/NAMESPACE/NAME"},
		{in: "", err: "want CLUSTER/NAMESPACE/NAME"},
		{in: "10.96.0.10", err: "CLUSTER-IP:PORT"},
		{in: "10.96.0.10:80/ICMP", err: `protocol "ICMP"`},
		{in: "10.96.0.10:0", err: "1-65535"},
		{in: "10.96.0.10:99999", err: "CLUSTER-IP:PORT"},
		{in: "[fe80::1%eth0]:80", err: "no zone"},
		{in: "web:80", err: "CLUSTER-IP:PORT"},
	}
	for _, tt := range tests {
		got, err := ParseQuery(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseQuery(%q) = %+v, %v; want an error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseQuery(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		str := tt.str
		if str == "" {
			str = tt.in
		}
		if got.String() != str {
			t.Errorf("ParseQuery(%q).String() = %q, want %q", tt.in, got.String(), str)
		}
		if again, err := ParseQuery(got.String()); err != nil || again != got {
			t.Errorf("%q does not round-trip: %+v, %v", got.String(), again, err)
		}
	}
}

func lookupState() *State {
	port := func(cluster, ns, name, pname string, pr Protocol, ip string, n uint16) *ServicePort {
		a := netip.MustParseAddr(ip)
		return &ServicePort{Key: PortKey{Cluster: cluster, Namespace: ns, Name: name, Port: pname, Protocol: pr, IPv6: a.Is6()}, ClusterIP: a, Port: n}
	}
	cs := func(name string, synced bool, cidrs []string, ports ...*ServicePort) *ClusterState {
		c := &ClusterState{Name: name, Synced: synced, Ports: map[PortKey]*ServicePort{}}
		for _, s := range cidrs {
			c.ServiceCIDRs = append(c.ServiceCIDRs, netip.MustParsePrefix(s))
		}
		for _, p := range ports {
			c.Ports[p.Key] = p
		}
		return c
	}
	return &State{Clusters: []*ClusterState{
		cs("prod", true, []string{"10.96.0.0/16", "fd00:96::/112"},
			port("prod", "default", "web", "http", TCP, "10.96.0.10", 80),
			port("prod", "default", "web", "https", TCP, "10.96.0.10", 443),
			port("prod", "default", "web", "http", TCP, "fd00:96::10", 80),
			port("prod", "kube-system", "dns", "dns", UDP, "10.96.0.53", 53),
			port("prod", "kube-system", "dns", "dns-tcp", TCP, "10.96.0.53", 53),
			port("prod", "other", "web", "", TCP, "10.96.0.11", 80),
		),
		cs("staging", false, []string{"10.100.0.0/16"}),
	}}
}

func TestLookup(t *testing.T) {
	st := lookupState()
	tests := []struct {
		q    string
		want []string // keys, in order
		err  string
	}{
		{q: "prod/default/web", want: []string{"prod/default/web:http", "prod/default/web:http(v6)", "prod/default/web:https"}},
		{q: "prod/kube-system/dns", want: []string{"prod/kube-system/dns:dns/UDP", "prod/kube-system/dns:dns-tcp"}},
		{q: "10.96.0.53:53", want: []string{"prod/kube-system/dns:dns/UDP", "prod/kube-system/dns:dns-tcp"}},
		{q: "10.96.0.53:53/UDP", want: []string{"prod/kube-system/dns:dns/UDP"}},
		{q: "[fd00:96::10]:80/TCP", want: []string{"prod/default/web:http(v6)"}},
		{q: "10.96.0.10:80/UDP", err: `no service port of cluster "prod" has 10.96.0.10:80/UDP`},
		{q: "10.100.0.10:80", err: `cluster "staging" has not synced yet`},
		{q: "192.168.0.1:80", err: "192.168.0.1 is in no cluster's service_cidrs"},
		{q: "prod/default/nope", err: `cluster "prod" has no service default/nope`},
		{q: "staging/default/web", err: `cluster "staging" has not synced yet`},
		{q: "dev/default/web", err: `no cluster "dev" is configured (clusters: prod, staging)`},
	}
	for _, tt := range tests {
		q, err := ParseQuery(tt.q)
		if err != nil {
			t.Fatal(err)
		}
		ms, err := st.Lookup(q)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrNotFound) {
				t.Errorf("Lookup(%s) = %d matches, %v; want ErrNotFound with %q", tt.q, len(ms), err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Lookup(%s): %v", tt.q, err)
			continue
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.Port.Key.String())
			if m.Cluster.Ports[m.Port.Key] != m.Port {
				t.Errorf("Lookup(%s): %s comes with the wrong cluster %s", tt.q, m.Port.Key, m.Cluster.Name)
			}
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("Lookup(%s) = %q, want %q", tt.q, got, tt.want)
		}
	}
}

func TestClusterFor(t *testing.T) {
	st := lookupState()
	for ip, want := range map[string]string{"10.96.1.1": "prod", "fd00:96::1": "prod", "10.100.0.1": "staging", "10.0.0.1": ""} {
		got := ""
		if c := st.ClusterFor(netip.MustParseAddr(ip)); c != nil {
			got = c.Name
		}
		if got != want {
			t.Errorf("ClusterFor(%s) = %q, want %q", ip, got, want)
		}
	}
}
