package ipvs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

const npMark = 0x100000

func servedNP(sp *model.ServicePort, np uint16) *model.ServicePort {
	c := *sp
	c.NodePort, c.ServedNodePort = np, np
	return &c
}

var (
	npWeb   = servedNP(svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080", "10.0.1.2:8080"), 30080)
	npEmpty = servedNP(svc("alpha", "default", "empty", "", model.UDP, "10.96.0.30", 53), 30053)
	npPlain = svc("alpha", "default", "plain", "", model.TCP, "10.96.0.40", 80, "10.0.4.1:80")
	npBeta  = servedNP(svc("beta", "default", "api", "https", model.TCP, "10.97.0.10", 443, "10.1.0.1:6443"), 30443)
)

var npHostAddrs = []netip.Addr{
	netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.168.1.5"),
	netip.MustParseAddr("169.254.0.7"), netip.MustParseAddr("fd00::2"),
}

// npState: alpha serves node ports, beta does not (its port's
// ServedNodePort set anyway: the backend must follow the cluster).
func npState(alphaPorts ...*model.ServicePort) *model.State {
	if alphaPorts == nil {
		alphaPorts = []*model.ServicePort{npWeb, npEmpty, npPlain}
	}
	a := cluster("alpha", true, alphaCIDRs, alphaPorts...)
	a.ServeNodePorts = true
	st := state(a, cluster("beta", true, betaCIDRs, npBeta))
	st.HostAddrs = npHostAddrs
	return st
}

func newNPEnv(t *testing.T) *env {
	e := newEnv(t)
	e.opt.MasqueradeMark = npMark
	e.p = New(e.opt)
	return e
}

// refusedNew says what the filter rules do with a new connection to
// addr:port: refused when the address and port are a served node port (or
// a VIP) and no virtual server is there. It reads the sets and checks that
// the rules refer to them.
func (e *env) refusedNew(addr string, proto string, port uint16) bool {
	e.t.Helper()
	m := netip.AddrPortFrom(netip.MustParseAddr(addr), port)
	member := m.Addr().String() + "," + proto + ":" + strings.TrimPrefix(m.String(), m.Addr().String()+":")
	rules := strings.Join(e.ipt.Rules("filter", chainFilter), "\n")
	inPorts := slices.Contains(e.ips.Members("OUTPOST-IPVS-PORTS"), member)
	node := slices.Contains(e.ips.Members("OUTPOST-IPVS-NODEPORTS"), member) &&
		strings.Contains(rules, "--match-set OUTPOST-IPVS-NODEPORTS dst,dst -m set ! --match-set OUTPOST-IPVS-PORTS dst,dst")
	vip := slices.Contains(e.ips.Members("OUTPOST-IPVS-VIPS"), addr)
	return (node || vip) && !inPorts
}

// TestNodePortVirtualServers: a served node port with endpoints is a
// virtual server at each of this host's non-loopback, non-link-local
// addresses of the family, with the service's endpoints; one without
// endpoints is refused there; none of it at loopback; host addresses are
// never bound to outpost0; a cluster that does not serve node ports gets
// none.
func TestNodePortVirtualServers(t *testing.T) {
	e := newNPEnv(t)
	e.sync(npState(), false)
	dump := e.k.Dump()
	for _, want := range []string{
		"service 10.250.0.2:30080/TCP rr\n  -> 10.0.1.1:8080 weight 1 active 0 inactive 0\n  -> 10.0.1.2:8080 weight 1",
		"service 192.168.1.5:30080/TCP rr\n  -> 10.0.1.1:8080",
		"service 10.96.0.10:80/TCP rr",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("kernel lacks %q:\n%s", want, dump)
		}
	}
	for _, not := range []string{"127.0.0.1", "169.254.0.7", ":30053", ":30443", "addr 10.250.0.2", "addr 192.168.1.5"} {
		if strings.Contains(dump, not) {
			t.Errorf("kernel has %q:\n%s", not, dump)
		}
	}
	e.wantSet("OUTPOST-IPVS-NODEPORTS", "10.250.0.2,tcp:30080", "10.250.0.2,udp:30053", "192.168.1.5,tcp:30080", "192.168.1.5,udp:30053")
	for _, c := range []struct {
		addr, proto string
		port        uint16
		refused     bool
	}{
		{"10.250.0.2", "tcp", 30080, false},
		{"10.250.0.2", "udp", 30053, true},
		{"192.168.1.5", "udp", 30053, true},
		{"127.0.0.1", "udp", 30053, false}, // loopback: the host's own business
		{"10.250.0.2", "tcp", 30443, false},
		{"10.250.0.2", "tcp", 22, false},
	} {
		if got := e.refusedNew(c.addr, c.proto, c.port); got != c.refused {
			t.Errorf("new connection to %s:%d/%s refused=%v, want %v", c.addr, c.port, c.proto, got, c.refused)
		}
	}
	// The node port rules come with the rest, and reject by protocol.
	rules := e.ipt.Rules("filter", chainFilter)
	if len(rules) != 5 || !strings.Contains(rules[3], "-p tcp") || !strings.Contains(rules[3], "tcp-reset") {
		t.Errorf("filter rules %q, want the routed_clients rule, the VIP pair and the node port pair", rules)
	}

	// Endpoints come to the UDP port: its virtual servers appear, and it
	// is no longer refused. An unchanged sync does nothing.
	e.k.TakeOps()
	e.sync(npState(npWeb, withEndpoints(npEmpty, "10.0.2.1:53"), npPlain), false)
	if got := e.k.Dump(); !strings.Contains(got, "service 10.250.0.2:30053/UDP rr\n  -> 10.0.2.1:53") {
		t.Errorf("no node port virtual server for the UDP port:\n%s", got)
	}
	if e.refusedNew("10.250.0.2", "udp", 30053) {
		t.Error("a node port with endpoints is refused")
	}
	e.k.TakeOps()
	restores := e.ipt.Restores
	e.sync(npState(npWeb, withEndpoints(npEmpty, "10.0.2.1:53"), npPlain), false)
	e.wantOps()
	if e.ipt.Restores != restores {
		t.Errorf("an unchanged sync rewrote the rules")
	}
}

// TestNodePortAddressesFollowTheHost: an address the host loses loses its
// virtual servers; a new one gets them.
func TestNodePortAddressesFollowTheHost(t *testing.T) {
	e := newNPEnv(t)
	e.sync(npState(), false)
	st := npState()
	st.HostAddrs = []netip.Addr{netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("10.9.9.9")}
	e.sync(st, false)
	dump := e.k.Dump()
	if strings.Contains(dump, "192.168.1.5") || !strings.Contains(dump, "service 10.9.9.9:30080/TCP") {
		t.Errorf("node port virtual servers do not follow the host's addresses:\n%s", dump)
	}
	e.wantSet("OUTPOST-IPVS-NODEPORTS", "10.250.0.2,tcp:30080", "10.250.0.2,udp:30053", "10.9.9.9,tcp:30080", "10.9.9.9,udp:30053")
}

// TestNodePortRestart: a restarted daemon knows its node port virtual
// servers from the NODEPORTS set: one whose service went while it was
// down is deleted, one of a cluster that has not synced yet stays, and a
// virtual server someone else made at the host's address is never touched.
func TestNodePortRestart(t *testing.T) {
	e := newNPEnv(t)
	foreign := Service{ServiceKey: key("10.250.0.2", 8443, model.TCP), Scheduler: "rr"}
	if err := e.k.EnsureModule(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.k.AddService(foreign); err != nil {
		t.Fatal(err)
	}
	e.sync(npState(), false)

	// Restart; alpha has not synced: everything stays.
	e.restart()
	before := e.k.Dump()
	unsynced := npState()
	unsynced.Clusters[0].Synced = false
	unsynced.Clusters[0].Ports = map[model.PortKey]*model.ServicePort{}
	e.sync(unsynced, false)
	if got := e.k.Dump(); got != before {
		t.Errorf("an unsynced cluster's node ports changed:\n%s\nwant:\n%s", got, before)
	}
	if e.refusedNew("10.250.0.2", "tcp", 30080) || !e.refusedNew("10.250.0.2", "udp", 30053) {
		t.Error("the kept node ports do not work as before")
	}

	// Restart again; alpha synced without web: its node port goes.
	e.restart()
	e.sync(npState(npEmpty, npPlain), false)
	dump := e.k.Dump()
	if strings.Contains(dump, ":30080") {
		t.Errorf("the node port of a deleted service stayed:\n%s", dump)
	}
	if !strings.Contains(dump, "service 10.250.0.2:8443/TCP rr") {
		t.Errorf("a virtual server that is not ours went:\n%s", dump)
	}
	e.wantSet("OUTPOST-IPVS-NODEPORTS", "10.250.0.2,udp:30053", "192.168.1.5,udp:30053")
}

// TestNodePortsOff: serve_node_ports turned off removes the virtual
// servers, the rules and the set; Cleanup removes them too, and only ours.
func TestNodePortsOff(t *testing.T) {
	e := newNPEnv(t)
	foreign := Service{ServiceKey: key("10.250.0.2", 8443, model.TCP), Scheduler: "rr"}
	if err := e.k.EnsureModule(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.k.AddService(foreign); err != nil {
		t.Fatal(err)
	}
	e.sync(npState(), false)
	off := npState()
	off.Clusters[0].ServeNodePorts = false
	e.sync(off, false)
	if d := e.k.Dump(); strings.Contains(d, ":30080") || !strings.Contains(d, ":8443") {
		t.Errorf("after serve_node_ports was turned off:\n%s", d)
	}
	if names, _ := e.ips.List(t.Context()); slices.Contains(names, "OUTPOST-IPVS-NODEPORTS") {
		t.Errorf("the NODEPORTS set stayed: %q", names)
	}
	if d := e.ipt.Dump(); strings.Contains(d, "NODEPORTS") {
		t.Errorf("rules still name NODEPORTS:\n%s", d)
	}

	e.sync(npState(), false)
	if err := e.p.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := e.k.Dump(); strings.Contains(d, ":30080") || !strings.Contains(d, ":8443") {
		t.Errorf("after Cleanup:\n%s", d)
	}
	if names, _ := e.ips.List(t.Context()); len(names) != 0 {
		t.Errorf("sets after Cleanup: %q", names)
	}
}

// TestNodePortsNeedMasquerade: without masquerading, no node port is
// served, and no set or rule for them exists.
func TestNodePortsNeedMasquerade(t *testing.T) {
	e := newEnv(t) // MasqueradeMark 0
	e.sync(npState(), false)
	if d := e.k.Dump(); strings.Contains(d, ":30080") {
		t.Errorf("node ports served without masquerading:\n%s", d)
	}
	if names, _ := e.ips.List(t.Context()); slices.Contains(names, "OUTPOST-IPVS-NODEPORTS") {
		t.Errorf("sets %q", names)
	}
}

// TestNodePortIPv6: an IPv6 Proxier serves IPv6 ports at the host's IPv6
// addresses only.
func TestNodePortIPv6(t *testing.T) {
	e := newNPEnv(t)
	e.opt.IPv6 = true
	e.p = New(e.opt)
	web6 := servedNP(svc("alpha", "default", "web", "http", model.TCP, "fd00:96::10", 80, "[fd00:1::1]:8080"), 30080)
	e.sync(npState(npWeb, web6), false)
	dump := e.k.Dump()
	if !strings.Contains(dump, "service [fd00::2]:30080/TCP rr\n  -> [fd00:1::1]:8080") || strings.Contains(dump, "10.250.0.2") {
		t.Errorf("IPv6 node ports:\n%s", dump)
	}
	e.wantSet("OUTPOST-IPVS-NODEPORTS6", "fd00::2,tcp:30080")
}

func TestSaveMembers(t *testing.T) {
	out := "create OUTPOST-IPVS-NODEPORTS hash:ip,port family inet hashsize 1024 maxelem 1048576\n" +
		"add OUTPOST-IPVS-NODEPORTS 10.250.0.2,tcp:30080\nadd OUTPOST-IPVS-NODEPORTS 10.0.0.1,udp:30053\n" +
		"add OTHER 10.0.0.9,tcp:1\n"
	if got, want := saveMembers([]byte(out), "OUTPOST-IPVS-NODEPORTS"), []string{"10.0.0.1,udp:30053", "10.250.0.2,tcp:30080"}; !slices.Equal(got, want) {
		t.Errorf("saveMembers = %q, want %q", got, want)
	}
	if got := saveMembers([]byte("create X hash:ip\n"), "X"); got == nil || len(got) != 0 {
		t.Errorf("an empty set: %q, want empty and not nil", got)
	}
}
