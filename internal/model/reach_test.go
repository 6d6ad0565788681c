package model

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

func addrs(typeAddr ...string) []NodeAddr {
	var out []NodeAddr
	for i := 0; i < len(typeAddr); i += 2 {
		out = append(out, NodeAddr{Type: typeAddr[i], Addr: netip.MustParseAddr(typeAddr[i+1])})
	}
	return out
}

func TestNodeAddress(t *testing.T) {
	dual := NodeInfo{Name: "n1", Ready: true, Addresses: addrs(
		reach.NodeExternalIP, "203.0.113.7",
		reach.NodeInternalIP, "10.0.0.7",
		reach.NodeInternalIP, "10.0.0.8", // a second one of the type: the first wins
		reach.NodeInternalIP, "fd00::7",
		reach.NodeExternalIP, "2001:db8::7",
	)}
	for _, tc := range []struct {
		name   string
		n      NodeInfo
		prefer []string
		v6     bool
		want   string // "" for none
	}{
		{"default is InternalIP", dual, nil, false, "10.0.0.7"},
		{"default v6", dual, nil, true, "fd00::7"},
		{"ExternalIP first", dual, []string{reach.NodeExternalIP, reach.NodeInternalIP}, false, "203.0.113.7"},
		{"ExternalIP first v6", dual, []string{reach.NodeExternalIP, reach.NodeInternalIP}, true, "2001:db8::7"},
		{"only ExternalIP", dual, []string{reach.NodeExternalIP}, false, "203.0.113.7"},
		{"falls back to the next type", NodeInfo{Addresses: addrs(reach.NodeInternalIP, "10.0.0.7")}, []string{reach.NodeExternalIP, reach.NodeInternalIP}, false, "10.0.0.7"},
		{"a type not preferred is never used", NodeInfo{Addresses: addrs(reach.NodeExternalIP, "203.0.113.7")}, nil, false, ""},
		{"no address of the family", NodeInfo{Addresses: addrs(reach.NodeInternalIP, "10.0.0.7")}, nil, true, ""},
		{"no addresses at all", NodeInfo{Name: "bare"}, nil, false, ""},
		{"unsafe addresses are skipped", NodeInfo{Addresses: addrs(
			reach.NodeInternalIP, "127.0.0.1", reach.NodeInternalIP, "169.254.169.254", reach.NodeInternalIP, "0.0.0.0",
			reach.NodeInternalIP, "10.0.0.9")}, nil, false, "10.0.0.9"},
		{"v4-mapped counts as IPv4", NodeInfo{Addresses: addrs(reach.NodeInternalIP, "::ffff:10.0.0.5")}, nil, false, "10.0.0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := NodeAddress(tc.n, tc.prefer, tc.v6)
			if tc.want == "" {
				if ok {
					t.Fatalf("NodeAddress = %v, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tc.want) {
				t.Fatalf("NodeAddress = %v, %v; want %s", got, ok, tc.want)
			}
		})
	}
}

func TestNodePortEndpoints(t *testing.T) {
	nodes := []NodeInfo{
		{Name: "c", Ready: true, Addresses: addrs(reach.NodeInternalIP, "10.0.0.3", reach.NodeInternalIP, "fd00::3")},
		{Name: "a", Ready: true, Unschedulable: true, Addresses: addrs(reach.NodeInternalIP, "10.0.0.1")},
		{Name: "down", Ready: false, Addresses: addrs(reach.NodeInternalIP, "10.0.0.2")},
		{Name: "twin", Ready: true, Addresses: addrs(reach.NodeInternalIP, "10.0.0.3")}, // same address as c
		{Name: "ext", Ready: true, Addresses: addrs(reach.NodeExternalIP, "203.0.113.9")},
	}
	eps, excl, reason := NodePortEndpoints(NodePortQuery{NodePort: 30080, Nodes: nodes})
	want := []Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.1:30080")},
		{Addr: netip.MustParseAddrPort("10.0.0.3:30080")},
	}
	if !reflect.DeepEqual(eps, want) || reason != "" {
		t.Errorf("endpoints %v, reason %q; want %v", eps, reason, want)
	}
	wantExcl := []ExcludedEndpoint{{Address: "10.0.0.2", Port: 30080, Reason: ExcludedNotReady, Detail: "node down is not Ready"}}
	if !reflect.DeepEqual(excl, wantExcl) {
		t.Errorf("excluded %v, want %v", excl, wantExcl)
	}

	eps, _, _ = NodePortEndpoints(NodePortQuery{NodePort: 30080, Nodes: nodes, Prefer: []string{reach.NodeExternalIP, reach.NodeInternalIP}})
	if len(eps) != 3 || eps[2].Addr != netip.MustParseAddrPort("203.0.113.9:30080") {
		t.Errorf("ExternalIP preferred: %v", eps)
	}
	eps, _, _ = NodePortEndpoints(NodePortQuery{NodePort: 30080, Nodes: nodes, IPv6: true})
	if len(eps) != 1 || eps[0].Addr != netip.MustParseAddrPort("[fd00::3]:30080") {
		t.Errorf("IPv6: %v", eps)
	}

	// externalTrafficPolicy: Local: only the nodes with an endpoint.
	eps, excl, _ = NodePortEndpoints(NodePortQuery{NodePort: 30080, Nodes: nodes, OnlyNodes: []string{"c", "down"}})
	if len(eps) != 1 || eps[0].Addr != netip.MustParseAddrPort("10.0.0.3:30080") {
		t.Errorf("only nodes c and down: %v", eps)
	}
	if len(excl) != 2 || excl[0].Reason != ExcludedFiltered || excl[0].Address != "10.0.0.1" || excl[1].Reason != ExcludedNotReady {
		t.Errorf("only nodes c and down: excluded %v", excl)
	}

	// Check refuses a node's address: it is left out with the reason
	// and detail it gives, named by node; the node is not skipped for
	// another address of its own.
	check := func(node string, ip netip.Addr) (Exclusion, string) {
		if ip == netip.MustParseAddr("10.0.0.3") {
			return ExcludedUnsafe, "this host's own address"
		}
		return "", ""
	}
	eps, excl, _ = NodePortEndpoints(NodePortQuery{NodePort: 30080, Nodes: nodes, Check: check})
	if len(eps) != 1 || eps[0].Addr != netip.MustParseAddrPort("10.0.0.1:30080") {
		t.Errorf("with 10.0.0.3 refused: %v", eps)
	}
	// c and twin share the address: it is left out once.
	wantExcl = []ExcludedEndpoint{
		{Address: "10.0.0.2", Port: 30080, Reason: ExcludedNotReady, Detail: "node down is not Ready"},
		{Address: "10.0.0.3", Port: 30080, Reason: ExcludedUnsafe, Detail: "node c: this host's own address"},
	}
	if !reflect.DeepEqual(excl, wantExcl) {
		t.Errorf("with 10.0.0.3 refused: excluded %v, want %v", excl, wantExcl)
	}

	for _, tc := range []struct {
		name string
		q    NodePortQuery
		want []string // substrings of the reason
	}{
		{"no nodePort", NodePortQuery{Nodes: nodes}, []string{NoNodePortReason}},
		{"no nodes", NodePortQuery{NodePort: 30080}, []string{"the cluster has no nodes"}},
		{"none ready", NodePortQuery{NodePort: 30080, Nodes: nodes[2:3]}, []string{"1 node is not Ready"}},
		{"no address of the family", NodePortQuery{NodePort: 30080, Nodes: nodes[1:3], IPv6: true}, []string{"2 nodes have no InternalIP IPv6 address"}},
		{"both", NodePortQuery{NodePort: 30080, Nodes: []NodeInfo{nodes[2], nodes[4]}}, []string{"1 node is not Ready", "1 node has no InternalIP IPv4 address"}},
		{"no local endpoint", NodePortQuery{NodePort: 30080, Nodes: nodes, OnlyNodes: []string{}},
			[]string{"1 node is not Ready", "3 nodes have no ready endpoint (externalTrafficPolicy: Local)", "1 node has no InternalIP IPv4 address"}},
		{"all refused", NodePortQuery{NodePort: 30080, Nodes: []NodeInfo{nodes[0], nodes[3]}, Check: check}, []string{"2 nodes' addresses are refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps, _, reason := NodePortEndpoints(tc.q)
			if len(eps) != 0 {
				t.Fatalf("endpoints %v, want none", eps)
			}
			for _, w := range tc.want {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q lacks %q", reason, w)
				}
			}
		})
	}
}

func TestNodeInfoEqual(t *testing.T) {
	a := NodeInfo{Name: "n", Ready: true, Addresses: addrs(reach.NodeInternalIP, "10.0.0.1"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	b := a
	b.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	if !a.Equal(b) {
		t.Error("equal NodeInfos differ")
	}
	for name, change := range map[string]func(*NodeInfo){
		"ready":         func(n *NodeInfo) { n.Ready = false },
		"unschedulable": func(n *NodeInfo) { n.Unschedulable = true },
		"address":       func(n *NodeInfo) { n.Addresses = addrs(reach.NodeInternalIP, "10.0.0.2") },
		"cidr":          func(n *NodeInfo) { n.PodCIDRs = nil },
	} {
		c := a
		change(&c)
		if a.Equal(c) {
			t.Errorf("a change of %s is not seen", name)
		}
	}
}
