package iptables

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// npState: modeltest.NodePorts at this host's addresses.
func npState() *model.State {
	return modeltest.NodePorts(netip.MustParseAddr(hostIP), netip.MustParseAddr(hostIP6), netip.MustParseAddr("127.0.0.1"))
}

// fromRemote is a packet from another machine to this host.
func fromRemote(proto, dst string, port uint16) packet { return local(proto, dst, port).viaRoute() }

// TestNodePortFlows: packets from other machines and from local processes
// to this host's address at a served node port reach the endpoints,
// masqueraded; without endpoints they are refused (in filter INPUT for
// the former); loopback node ports, node ports not served and other
// addresses are left alone.
func TestNodePortFlows(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			f := NewFake()
			mustSync(t, newProxier(f, v6, testMark), npState(), true)
			host, lo, other := hostIP, "127.0.0.1", "192.0.2.1"
			web, icmp := shares(true, "10.0.1.1:8080", "10.0.1.2:8080"), "icmp-port-unreachable"
			if v6 {
				host, lo, other = hostIP6, "::1", "2001:db8::1"
				web, icmp = shares(true, "[fd00:1::1]:8080"), "icmp6-port-unreachable"
			}
			cases := []struct {
				name string
				pkt  packet
				want []outcome
			}{
				{"remote to a node port", fromRemote("tcp", host, 30080), web},
				{"local process to the host's address at a node port", tcp(host, 30080), web},
				{"loopback node port", tcp(lo, 30080), untouched},
				{"remote, node port without endpoints", fromRemote("tcp", host, 30081), rejected("tcp-reset")},
				{"local, node port without endpoints", tcp(host, 30081), rejected("tcp-reset")},
				{"loopback node port without endpoints", tcp(lo, 30081), untouched},
				{"udp node port without endpoints", fromRemote("udp", host, 30082), rejected(icmp)},
				{"other protocol at a node port", fromRemote("udp", host, 30080), untouched},
				{"a port that is no node port", fromRemote("tcp", host, 30099), untouched},
				{"node port to another machine, routed through", fromRemote("tcp", other, 30080), untouched},
			}
			if !v6 {
				cases = append(cases, []struct {
					name string
					pkt  packet
					want []outcome
				}{
					{"udp node port", fromRemote("udp", host, 30053), shares(true, "10.0.2.1:5353")},
					{"node port the model refused", fromRemote("tcp", host, 30083), untouched},
					{"node port of a cluster that serves none", fromRemote("tcp", host, 30090), untouched},
					{"the ClusterIP still", fromRemote("tcp", "10.96.0.10", 80), web},
				}...)
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { checkFlow(t, f, c.pkt, c.want) })
			}
			checkFamily(t, f, v6)
			if in := f.Rules("filter", "INPUT"); len(in) != 1 || !strings.HasSuffix(in[0], "-j "+chainFilter) {
				t.Errorf("filter INPUT %q, want one hook into %s", in, chainFilter)
			}
		})
	}
}

// TestNodePortsNeedMasquerade: without a masquerade mark, node ports are
// not served at all (a pod's reply would go straight to the client).
func TestNodePortsNeedMasquerade(t *testing.T) {
	f := NewFake()
	mustSync(t, newProxier(f, false, 0), npState(), true)
	checkFlow(t, f, fromRemote("tcp", hostIP, 30080), untouched)
	checkFlow(t, f, fromRemote("tcp", hostIP, 30081), untouched)
	if d := f.Dump(); strings.Contains(d, nodePrefix) || strings.Contains(d, "addrtype") {
		t.Errorf("node port rules without masquerading:\n%s", d)
	}
}

// npChange changes one served node port of alpha.
func npChange(st *model.State, k model.PortKey, f func(*model.ServicePort) *model.ServicePort) *model.State {
	st = modeltest.CloneState(st)
	st.Clusters[0].Ports[k] = f(st.Clusters[0].Ports[k])
	return st
}

// TestNodePortIncremental: each kind of change rewrites only what it
// concerns, and leaves what a full sync of the new state writes.
func TestNodePortIncremental(t *testing.T) {
	web := model.PortKey{Cluster: "alpha", Namespace: "default", Name: "web", Port: "http", Protocol: model.TCP}
	f := NewFake()
	p := newProxier(f, false, testMark)
	st := npState()
	mustSync(t, p, st, true)

	step := func(name string, next *model.State, check func(script string)) {
		t.Helper()
		st = next
		mustSync(t, p, st, false)
		script := string(f.LastScript)
		if strings.Contains(script, ":"+clusterPrefix) || strings.Contains(script, ":"+nodePrefix) || strings.Contains(script, ":"+nodeRejPrefix) {
			t.Errorf("%s: the sync declared a dispatch chain (a full sync?):\n%s", name, script)
		}
		check(script)
		checkSameAsFull(t, f, st, false, testMark)
	}

	step("endpoints change", npChange(st, web, func(sp *model.ServicePort) *model.ServicePort {
		return withEndpoints(sp, "10.0.1.3:8080")
	}), func(script string) {
		if got := touched([]byte(script)); slices.ContainsFunc(got, func(ch string) bool { return ch != serviceChain(web) }) {
			t.Errorf("an endpoint change touches %q, want only the service chain:\n%s", got, script)
		}
		checkFlow(t, f, fromRemote("tcp", hostIP, 30080), shares(true, "10.0.1.3:8080"))
	})
	step("no endpoints", npChange(st, web, func(sp *model.ServicePort) *model.ServicePort { return withEndpoints(sp) }), func(script string) {
		for _, want := range []string{"-D " + nodeChain("alpha") + " ", "-A " + nodeRejChain("alpha") + " ", "-X " + serviceChain(web)} {
			if !strings.Contains(script, want) {
				t.Errorf("no %q in:\n%s", want, script)
			}
		}
		checkFlow(t, f, fromRemote("tcp", hostIP, 30080), rejected("tcp-reset"))
	})
	step("endpoints again", npChange(st, web, func(sp *model.ServicePort) *model.ServicePort {
		return withEndpoints(sp, "10.0.1.1:8080")
	}), func(string) {
		checkFlow(t, f, fromRemote("tcp", hostIP, 30080), shares(true, "10.0.1.1:8080"))
	})
	step("another node port", npChange(st, web, func(sp *model.ServicePort) *model.ServicePort { return modeltest.WithNodePort(sp, 30085, true) }), func(string) {
		checkFlow(t, f, fromRemote("tcp", hostIP, 30080), untouched)
		checkFlow(t, f, fromRemote("tcp", hostIP, 30085), shares(true, "10.0.1.1:8080"))
	})
	step("node port refused by the model", npChange(st, web, func(sp *model.ServicePort) *model.ServicePort { return modeltest.WithNodePort(sp, 30085, false) }), func(script string) {
		checkFlow(t, f, fromRemote("tcp", hostIP, 30085), untouched)
		checkFlow(t, f, tcp("10.96.0.10", 80), shares(true, "10.0.1.1:8080"))
	})
	empty := model.PortKey{Cluster: "alpha", Namespace: "default", Name: "empty", Port: "http", Protocol: model.TCP}
	step("service without endpoints deleted", func() *model.State {
		s := modeltest.CloneState(st)
		delete(s.Clusters[0].Ports, empty)
		return s
	}(), func(script string) {
		if !strings.Contains(script, "-D "+nodeRejChain("alpha")+" ") {
			t.Errorf("the reject rule of the deleted port is not deleted:\n%s", script)
		}
		checkFlow(t, f, fromRemote("tcp", hostIP, 30081), untouched)
	})

	// serve_node_ports off: a full sync, and no node port rules remain.
	st = modeltest.CloneState(st)
	st.Clusters[0].ServeNodePorts = false
	for k, sp := range st.Clusters[0].Ports {
		st.Clusters[0].Ports[k] = modeltest.WithNodePort(sp, sp.NodePort, false)
	}
	mustSync(t, p, st, false)
	if d := f.Dump(); strings.Contains(d, nodePrefix) || strings.Contains(d, nodeRejPrefix) || strings.Contains(d, "addrtype") {
		t.Errorf("node port chains remain after serve_node_ports was turned off:\n%s", d)
	}
	checkSameAsFull(t, f, st, false, testMark)
	checkFlow(t, f, fromRemote("tcp", hostIP, 30053), untouched)
}

// TestNodePortUnsyncedClusterKept: a cluster that has not synced after a
// restart keeps its node port rules, and they keep serving.
func TestNodePortUnsyncedClusterKept(t *testing.T) {
	f := NewFake()
	mustSync(t, newProxier(f, false, testMark), npState(), true)
	st := modeltest.CloneState(npState())
	st.Clusters[0].Synced = false
	st.Clusters[0].Ports = map[model.PortKey]*model.ServicePort{}
	p := newProxier(f, false, testMark) // a restarted daemon
	mustSync(t, p, st, true)
	checkFlow(t, f, fromRemote("tcp", hostIP, 30080), shares(true, "10.0.1.1:8080", "10.0.1.2:8080"))
	checkFlow(t, f, fromRemote("tcp", hostIP, 30081), rejected("tcp-reset"))
	mustSync(t, p, npState(), false) // synced again: a full sync
	checkSameAsFull(t, f, npState(), false, testMark)
}

// TestNodePortIncrementalEqualsFull is TestIncrementalEqualsFull with node
// ports: random changes, node ports coming, going and moving among them,
// each applied by a partial sync, leave what a full sync writes, and
// packets to every served node port go where the state says.
func TestNodePortIncrementalEqualsFull(t *testing.T) {
	npChanges := append(slices.Clone(modeltest.Changes),
		modeltest.Change{Name: "serve a node port", Do: func(w *modeltest.World, c *model.ClusterState) bool {
			k, ok := w.PickKey(c)
			if ok {
				c.Ports[k] = modeltest.WithNodePort(c.Ports[k], uint16(30000+w.Next()), true)
			}
			return ok
		}},
		modeltest.Change{Name: "refuse a node port", Do: func(w *modeltest.World, c *model.ClusterState) bool {
			k, ok := w.PickKey(c)
			if ok {
				c.Ports[k] = modeltest.WithNodePort(c.Ports[k], c.Ports[k].NodePort, false)
			}
			return ok
		}},
	)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			w := &modeltest.World{Rng: rand.New(rand.NewPCG(3, 4)), St: npState()}
			modeltest.ClusterOf(w.St, "beta").ServeNodePorts = true
			f := NewFake()
			p := newProxier(f, v6, testMark)
			mustSync(t, p, w.St, true)
			for i := range 150 {
				ch := npChanges[w.Rng.IntN(len(npChanges))]
				if i < 2*len(npChanges) {
					ch = npChanges[i/2] // every kind of change on both clusters first
				}
				cname := []string{"alpha", "beta"}[w.Rng.IntN(2)]
				w.St = modeltest.CloneState(w.St)
				ch.Do(w, modeltest.ClusterOf(w.St, cname))
				if err := p.Sync(t.Context(), w.St, false); err != nil {
					t.Fatalf("step %d (%s: %s): %v", i, cname, ch.Name, err)
				}
				checkSameAsFull(t, f, w.St, v6, testMark)
				checkNodePortFlows(t, f, w.St, v6)
				if t.Failed() {
					t.Fatalf("step %d (%s: %s) failed", i, cname, ch.Name)
				}
			}
		})
	}
}

// checkNodePortFlows traces a packet from another machine and one from a
// local process to every served node port of st, and one to its loopback
// address.
func checkNodePortFlows(t *testing.T, f *Fake, st *model.State, v6 bool) {
	t.Helper()
	host, lo := hostIP, "127.0.0.1"
	if v6 {
		host, lo = hostIP6, "::1"
	}
	for _, c := range st.Clusters {
		if !c.Synced || !c.ServeNodePorts {
			continue
		}
		for _, sp := range sortedPorts(c) {
			if sp.Key.IPv6 != v6 || sp.ServedNodePort == 0 {
				continue
			}
			if sp.Key.Protocol == model.SCTP {
				continue // the flows of SCTP are those of TCP; the fake checks the syntax
			}
			pr := strings.ToLower(string(sp.Key.Protocol))
			want := wantFlow(sp, true)
			checkFlow(t, f, fromRemote(pr, host, sp.ServedNodePort), want)
			checkFlow(t, f, local(pr, host, sp.ServedNodePort), want)
			checkFlow(t, f, local(pr, lo, sp.ServedNodePort), untouched)
		}
	}
}

// TestNodePortInputHook: the filter INPUT hook exists only while a cluster
// serves node ports, and goes in the same transaction when none does.
func TestNodePortInputHook(t *testing.T) {
	f := NewFake()
	p := newProxier(f, false, testMark)
	mustSync(t, p, testState(), true)
	if in := f.Rules("filter", "INPUT"); len(in) != 0 {
		t.Errorf("filter INPUT %q without node ports, want nothing", in)
	}
	mustSync(t, p, npState(), false)
	if in := f.Rules("filter", "INPUT"); len(in) != 1 {
		t.Errorf("filter INPUT %q with node ports, want the hook", in)
	}
	mustSync(t, New(Options{Runner: f, MasqueradeMark: testMark, RoutedClients: testRouted}), npState(), true) // a restart: no second hook
	if in := f.Rules("filter", "INPUT"); len(in) != 1 {
		t.Errorf("filter INPUT %q after a restart, want one hook", in)
	}
	mustSync(t, p, testState(), false)
	if in := f.Rules("filter", "INPUT"); len(in) != 0 {
		t.Errorf("filter INPUT %q after node ports were turned off, want nothing", in)
	}
	checkSameAsFull(t, f, testState(), false, testMark)
}
