package ipvs

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

func TestProgram(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	e.wantDump(testStateDump)
	e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10", "10.96.0.20", "10.96.0.30", "10.96.0.40", "10.96.0.53", "10.97.0.10")
	e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80", "10.96.0.10,tcp:9090", "10.96.0.20,tcp:443",
		"10.96.0.40,sctp:3868", "10.96.0.53,tcp:53", "10.96.0.53,udp:53", "10.97.0.10,tcp:443")
	e.wantSet("OUTPOST-IPVS-CLIENTS") // no routed_clients: empty, yet there for the rule
	if names, _ := e.ips.List(t.Context()); len(names) != 3 {
		t.Errorf("ipsets: got %q, want only CLIENTS, VIPS and PORTS (temporary sets destroyed)", names)
	}
	for _, s := range sysctls {
		if got := e.k.Sysctl(s.name); got != s.value {
			t.Errorf("sysctl %s = %q, want %q", s.name, got, s.value)
		}
	}
	if got := e.k.Sysctl("net/ipv4/ip_forward"); got != "" {
		t.Errorf("ip_forward set to %q: local traffic does not need it", got)
	}

	wantRules := map[[2]string][]string{
		{"filter", "INPUT"}: {`-m comment --comment "kube-outpost: refuse ClusterIP ports without endpoints" -j OUTPOST-IPVS-FILTER`},
		{"filter", "OUTPOST-IPVS-FILTER"}: {
			`-m conntrack --ctstate NEW -m set --match-set OUTPOST-IPVS-VIPS dst -m addrtype ! --src-type LOCAL -m set ! --match-set OUTPOST-IPVS-CLIENTS src -m comment --comment "kube-outpost: ClusterIP from a source not in routed_clients" -j DROP`,
			`-p tcp -m conntrack --ctstate NEW -m set --match-set OUTPOST-IPVS-VIPS dst -m set ! --match-set OUTPOST-IPVS-PORTS dst,dst -m comment --comment "kube-outpost: ClusterIP port without endpoints" -j REJECT --reject-with tcp-reset`,
			`-m conntrack --ctstate NEW -m set --match-set OUTPOST-IPVS-VIPS dst -m set ! --match-set OUTPOST-IPVS-PORTS dst,dst -m comment --comment "kube-outpost: ClusterIP port without endpoints" -j REJECT`,
		},
		{"nat", "POSTROUTING"}: {`-m comment --comment "kube-outpost: masquerade IPVS connections" -j OUTPOST-IPVS-POSTROUTING`},
		{"nat", "OUTPOST-IPVS-POSTROUTING"}: {
			`-m ipvs --ipvs --vdir ORIGINAL --vmethod MASQ -m set --match-set OUTPOST-IPVS-VIPS src -m comment --comment "kube-outpost: masquerade IPVS connections" -j MASQUERADE --random-fully`,
		},
	}
	for tc, want := range wantRules {
		if got := e.ipt.Rules(tc[0], tc[1]); !slices.Equal(got, want) {
			t.Errorf("%s %s:\n  got  %q\n  want %q", tc[0], tc[1], got, want)
		}
	}
	// Nothing else in iptables.
	for _, table := range []string{"filter", "nat"} {
		for _, ch := range e.ipt.Chains(table) {
			if strings.HasPrefix(ch, "OUTPOST-") && ch != chainFilter && ch != chainPostrouting {
				t.Errorf("unexpected chain %s %s", table, ch)
			}
		}
	}
}

func TestMasqueradeEverything(t *testing.T) {
	e := newEnv(t)
	e.opt.MasqueradeMark = 0x4000
	e.restart()
	e.sync(testState(), false)
	want := []string{`-m ipvs --ipvs --vdir ORIGINAL --vmethod MASQ -m comment --comment "kube-outpost: masquerade IPVS connections" -j MASQUERADE --random-fully`}
	if got := e.ipt.Rules("nat", chainPostrouting); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSchedulerOption(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(webHTTP), false)
	e.k.TakeOps()
	// A restart with another scheduler changes the virtual servers in
	// place: their destinations and connections stay.
	e.opt.Scheduler = "wlc"
	e.restart()
	e.sync(testState(webHTTP), false)
	e.wantOps("update-service 10.96.0.10:80/TCP wlc", "update-service 10.97.0.10:443/TCP wlc")
}

func TestIncrementalChangesAreMinimal(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	e.k.TakeOps()
	restores, ipsetRestores := e.ipt.Restores, e.ips.Restores

	// Nothing changed: nothing is written anywhere.
	e.sync(testState(), false)
	e.wantOps()
	if e.ipt.Restores != restores || e.ips.Restores != ipsetRestores {
		t.Errorf("an unchanged sync wrote: %d iptables restores, %d ipset restores",
			e.ipt.Restores-restores, e.ips.Restores-ipsetRestores)
	}

	// One endpoint more.
	st := testState(withEndpoints(webHTTP, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"), webMetrics, dnsUDP, dnsTCP, sticky, sig, empty)
	e.sync(st, false)
	e.wantOps("add-dest 10.96.0.10:80/TCP 10.0.1.3:8080 weight 1")
	if e.ips.Restores != ipsetRestores {
		t.Errorf("an endpoint change rewrote an ipset")
	}

	// One endpoint less (no connections: deleted at once).
	e.sync(testState(), false)
	e.wantOps("del-dest 10.96.0.10:80/TCP 10.0.1.3:8080")

	// The last endpoint of a port goes: its virtual server goes, its VIP
	// stays for the other port, and the port is refused from now on.
	e.sync(testState(webHTTP, withEndpoints(webMetrics), dnsUDP, dnsTCP, sticky, sig, empty), false)
	e.wantOps("del-service 10.96.0.10:9090/TCP")
	e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10", "10.96.0.20", "10.96.0.30", "10.96.0.40", "10.96.0.53", "10.97.0.10")
	e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80", "10.96.0.20,tcp:443",
		"10.96.0.40,sctp:3868", "10.96.0.53,tcp:53", "10.96.0.53,udp:53", "10.97.0.10,tcp:443")

	// A service without endpoints gets one.
	e.sync(testState(webHTTP, withEndpoints(webMetrics), dnsUDP, dnsTCP, sticky, sig, withEndpoints(empty, "10.0.5.1:80")), false)
	e.wantOps("add-service 10.96.0.30:80/TCP rr", "add-dest 10.96.0.30:80/TCP 10.0.5.1:80 weight 1")
	e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80", "10.96.0.20,tcp:443", "10.96.0.30,tcp:80",
		"10.96.0.40,sctp:3868", "10.96.0.53,tcp:53", "10.96.0.53,udp:53", "10.97.0.10,tcp:443")

	// Affinity changes in place.
	e.sync(testState(webHTTP, withEndpoints(webMetrics), dnsUDP, dnsTCP, withAffinity(sticky, 0), sig, withEndpoints(empty, "10.0.5.1:80")), false)
	e.wantOps("update-service 10.96.0.20:443/TCP rr")

	// A whole service goes: its virtual server and its VIP.
	e.sync(testState(webHTTP, withEndpoints(webMetrics), dnsUDP, dnsTCP, withAffinity(sticky, 0), withEndpoints(empty, "10.0.5.1:80")), false)
	e.wantOps("del-service 10.96.0.40:3868/SCTP", "del-addr 10.96.0.40")
	e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10", "10.96.0.20", "10.96.0.30", "10.96.0.53", "10.97.0.10")

	// A new service on a new ClusterIP.
	e.sync(testState(webHTTP, withEndpoints(webMetrics), dnsUDP, dnsTCP, withAffinity(sticky, 0), withEndpoints(empty, "10.0.5.1:80"),
		svc("alpha", "default", "new", "", model.UDP, "10.96.0.60", 514, "10.0.6.1:514")), false)
	e.wantOps("add-addr 10.96.0.60", "add-service 10.96.0.60:514/UDP rr", "add-dest 10.96.0.60:514/UDP 10.0.6.1:514 weight 1")

	// None of that touched iptables.
	if e.ipt.Restores != restores {
		t.Errorf("partial syncs restored iptables %d times", e.ipt.Restores-restores)
	}

	// A full sync rewrites the rules and the sets, not IPVS.
	e.sync(testState(), true)
	if e.ipt.Restores != restores+1 {
		t.Errorf("full sync: %d iptables restores, want 1", e.ipt.Restores-restores)
	}
	e.k.TakeOps()
	e.sync(testState(), true)
	e.wantOps()
	e.wantDump(testStateDump)
}

func TestSwappingAllEndpointsAddsFirst(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(webHTTP), false)
	e.k.TakeOps()
	e.sync(testState(withEndpoints(webHTTP, "10.0.1.8:8080")), false)
	e.wantOps(
		"add-dest 10.96.0.10:80/TCP 10.0.1.8:8080 weight 1",
		"del-dest 10.96.0.10:80/TCP 10.0.1.1:8080",
		"del-dest 10.96.0.10:80/TCP 10.0.1.2:8080",
	)
}

func TestIPv6Proxier(t *testing.T) {
	e := newEnv(t)
	e.opt.IPv6 = true
	e.restart()
	e.sync(testState(), false)
	e.wantDump(`interface outpost0
  addr fd00:96::10
service [fd00:96::10]:80/TCP rr
  -> [fd00:1::1]:8080 weight 1 active 0 inactive 0
`)
	e.wantSet("OUTPOST-IPVS-VIPS6", "fd00:96::10")
	e.wantSet("OUTPOST-IPVS-PORTS6", "fd00:96::10,tcp:80")

	// The IPv4 Proxier next to it leaves the IPv6 half alone, and the
	// reverse.
	v4 := New(Options{Kernel: e.k, IPTables: e.ipt, IPSet: e.ips, Clock: e.clk})
	if err := v4.Sync(t.Context(), testState(), false); err != nil {
		t.Fatal(err)
	}
	e.k.TakeOps()
	e.sync(testState(), false)
	e.wantOps()
	if got := e.k.Dump(); !strings.Contains(got, "addr 10.96.0.10") || !strings.Contains(got, "addr fd00:96::10") {
		t.Errorf("both families should be programmed:\n%s", got)
	}
}

func TestRestartConverges(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	ipt, ips := e.ipt.Dump(), e.ips.Dump()
	e.k.TakeOps()

	e.restart()
	e.sync(testState(), false)
	e.wantOps() // not one change: no virtual server re-created
	e.wantDump(testStateDump)
	if got := e.ipt.Dump(); got != ipt {
		t.Errorf("iptables after restart:\n%s\nwant:\n%s", got, ipt)
	}
	if got := e.ips.Dump(); got != ips {
		t.Errorf("ipsets after restart:\n%s\nwant:\n%s", got, ips)
	}

	// Someone changed IPVS behind our back: the next sync, restarted or
	// not, repairs exactly that.
	must(t, e.k.DelDest(Service{ServiceKey: key("10.96.0.10", 80, model.TCP)}, Destination{Addr: ap("10.0.1.2:8080")}))
	must(t, e.k.AddDest(Service{ServiceKey: key("10.97.0.10", 443, model.TCP)}, Destination{Addr: ap("10.9.9.9:1"), Weight: 1}))
	must(t, e.k.UpdateDest(Service{ServiceKey: key("10.96.0.53", 53, model.UDP)}, Destination{Addr: ap("10.0.2.1:53"), Weight: 7}))
	must(t, e.k.DelService(Service{ServiceKey: key("10.96.0.20", 443, model.TCP)}))
	must(t, e.k.DelAddr(netip.MustParseAddr("10.96.0.30")))
	e.k.TakeOps()
	e.restart()
	e.sync(testState(), false)
	e.wantOps(
		"add-addr 10.96.0.30",
		"add-dest 10.96.0.10:80/TCP 10.0.1.2:8080 weight 1",
		"add-service 10.96.0.20:443/TCP rr persistent 10800",
		"add-dest 10.96.0.20:443/TCP 10.0.3.1:8443 weight 1",
		"update-dest 10.96.0.53:53/UDP 10.0.2.1:53 weight 1",
		"del-dest 10.97.0.10:443/TCP 10.9.9.9:1",
	)
	e.wantDump(testStateDump)
}

func TestForeignVirtualServersUntouched(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	foreign := []Service{
		{ServiceKey: key("192.168.1.1", 80, model.TCP), Scheduler: "wlc"},
		// In our service CIDR, but no ClusterIP and not on outpost0.
		{ServiceKey: key("10.96.0.99", 80, model.TCP), Scheduler: "rr"},
		{ServiceKey: key("fd00:96::99", 80, model.TCP), Scheduler: "rr"},
	}
	for _, s := range foreign {
		must(t, e.k.AddService(s))
		d := Destination{Addr: netip.AddrPortFrom(netip.MustParseAddr("192.168.2.2"), 8080), Weight: 3}
		if s.VIP.Is6() {
			d.Addr = ap("[fd00::2]:8080")
		}
		must(t, e.k.AddDest(s, d))
	}
	before := e.k.Dump()
	e.k.TakeOps()
	e.sync(testState(), true)
	e.restart()
	e.sync(testState(), false)
	e.sync(state(), false) // every cluster gone
	for _, op := range e.k.TakeOps() {
		if strings.Contains(op, "192.168.") || strings.Contains(op, "::99") || strings.Contains(op, ".99") {
			t.Errorf("touched a foreign virtual server: %s", op)
		}
	}
	for _, s := range foreign {
		if !strings.Contains(e.k.Dump(), "service "+s.String()+"\n") {
			t.Errorf("foreign %s is gone; before:\n%s", s, before)
		}
	}
}

func TestUnsyncedClusterKept(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	// A draining destination of beta, to show it is left as it is too.
	must(t, e.k.SetConns(key("10.97.0.10", 443, model.TCP), ap("10.1.0.2:6443"), 1, 0))
	e.sync(testState(webHTTP, webMetrics, dnsUDP, dnsTCP, sticky, sig, empty), false)
	st := state(cluster("alpha", true, alphaCIDRs, webHTTP), cluster("beta", true, betaCIDRs, withEndpoints(betaAPI, "10.1.0.1:6443")))
	e.sync(st, false)
	betaBefore := betaPart(e.k.Dump())
	e.k.TakeOps()

	// The daemon restarts while beta's apiserver is down: beta is not
	// synced and has no ports, yet keeps its VIPs, virtual servers and
	// destinations (weights included), and its ports stay open.
	e.restart()
	e.clk.Step(time.Hour)
	unsynced := state(cluster("alpha", true, alphaCIDRs, webHTTP), cluster("beta", false, betaCIDRs))
	e.sync(unsynced, false)
	e.sync(unsynced, true)
	for _, op := range e.k.TakeOps() {
		if strings.Contains(op, "10.97.") || strings.Contains(op, "10.1.0.") {
			t.Errorf("touched unsynced cluster beta: %s", op)
		}
	}
	if got := betaPart(e.k.Dump()); got != betaBefore {
		t.Errorf("beta changed while unsynced:\n%s\nwant:\n%s", got, betaBefore)
	}
	e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10", "10.97.0.10")
	e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80", "10.97.0.10,tcp:443")

	// Once synced, beta is programmed like any other cluster.
	e.sync(state(cluster("alpha", true, alphaCIDRs, webHTTP), cluster("beta", true, betaCIDRs, betaAPI)), false)
	e.wantOps("update-dest 10.97.0.10:443/TCP 10.1.0.2:6443 weight 1")

	// A cluster removed from the configuration is removed from the kernel.
	e.sync(state(cluster("alpha", true, alphaCIDRs, webHTTP)), false)
	e.wantOps("del-service 10.97.0.10:443/TCP", "del-addr 10.97.0.10")
}

// betaPart is the part of a Dump about beta's range 10.97.0.0/16.
func betaPart(dump string) string {
	var out []string
	in := false
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "service "):
			in = strings.HasPrefix(l, "service 10.97.")
		case strings.HasPrefix(l, "  addr "):
			if strings.HasPrefix(l, "  addr 10.97.") {
				out = append(out, l)
			}
			continue
		}
		if in {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestErrorThenConverge(t *testing.T) {
	boom := errors.New("netlink: boom")
	for _, method := range []string{"AddService", "AddDest", "AddAddr", "List", "InterfaceAddrs", "EnsureInterface"} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t)
			e.k.FailNext(method, boom)
			err := e.p.Sync(t.Context(), testState(), false)
			if !errors.Is(err, boom) {
				t.Fatalf("Sync: got %v, want the kernel's error", err)
			}
			e.sync(testState(), false)
			e.wantDump(testStateDump)
			e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80", "10.96.0.10,tcp:9090", "10.96.0.20,tcp:443",
				"10.96.0.40,sctp:3868", "10.96.0.53,tcp:53", "10.96.0.53,udp:53", "10.97.0.10,tcp:443")
		})
	}

	// A sysctl that cannot be set (a read-only /proc/sys in the sandbox,
	// after `sysctl --system` reset it) is a warning, not a failed sync:
	// failing would leave every later change unprogrammed.
	t.Run("SetSysctl", func(t *testing.T) {
		e := newEnv(t)
		e.k.FailNext("SetSysctl", errors.New("sysctl net/ipv4/vs/conntrack=1: read-only file system"))
		e.sync(testState(), false)
		e.wantDump(testStateDump)
		w := e.p.Warnings()
		if len(w) != 1 || !strings.Contains(w[0], "net.ipv4.vs.conntrack is not 1") || !strings.Contains(w[0], "read-only file system") {
			t.Fatalf("Warnings after a sysctl that could not be set: %q", w)
		}
		// The next full sync sets it: the warning goes.
		e.sync(testState(), true)
		if w := e.p.Warnings(); len(w) != 0 {
			t.Errorf("Warnings after the sysctl was set: %q", w)
		}
	})

	t.Run("one failed service does not hold back the others", func(t *testing.T) {
		e := newEnv(t)
		e.k.FailNext("AddService", boom)
		if err := e.p.Sync(t.Context(), testState(), false); !errors.Is(err, boom) {
			t.Fatalf("Sync: %v", err)
		}
		// The first virtual server failed; every other one is there, and
		// only those are open in PORTS.
		if got := e.k.Dump(); strings.Contains(got, "10.96.0.10:80/TCP") || !strings.Contains(got, "10.97.0.10:443/TCP") {
			t.Errorf("after a failed AddService:\n%s", got)
		}
		if slices.Contains(e.ips.Members("OUTPOST-IPVS-PORTS"), "10.96.0.10,tcp:80") {
			t.Errorf("a port without its virtual server is open")
		}
	})

	t.Run("a virtual server that cannot be deleted keeps its VIP", func(t *testing.T) {
		e := newEnv(t)
		e.sync(testState(), false)
		e.k.TakeOps()
		e.k.FailNext("DelService", boom)
		noSig := testState(webHTTP, webMetrics, dnsUDP, dnsTCP, sticky, empty)
		if err := e.p.Sync(t.Context(), noSig, false); !errors.Is(err, boom) {
			t.Fatalf("Sync: %v", err)
		}
		// Unbinding the VIP would make the virtual server foreign,
		// and it would stay for ever.
		e.wantOps()
		if !slices.Contains(e.ips.Members("OUTPOST-IPVS-VIPS"), "10.96.0.40") {
			t.Errorf("VIP of the undeleted virtual server left VIPS: no longer refused")
		}
		e.sync(noSig, false)
		e.wantOps("del-service 10.96.0.40:3868/SCTP", "del-addr 10.96.0.40")
	})

	t.Run("ipset", func(t *testing.T) {
		e := newEnv(t)
		e.sync(testState(), false)
		e.ips.FailNext = boom
		st := testState(webHTTP, webMetrics, dnsUDP, dnsTCP, sticky, empty)
		if err := e.p.Sync(t.Context(), st, false); !errors.Is(err, boom) {
			t.Fatalf("Sync: %v", err)
		}
		// Nothing changed in IPVS before the ports were closed.
		if !strings.Contains(e.k.Dump(), "10.96.0.40:3868/SCTP") {
			t.Errorf("virtual server deleted while its port was still open")
		}
		n := e.ipt.Restores
		e.sync(st, false)
		if e.ipt.Restores != n+1 {
			t.Errorf("the sync after a failure must be full")
		}
		e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10", "10.96.0.20", "10.96.0.30", "10.96.0.53", "10.97.0.10")
	})

	t.Run("iptables", func(t *testing.T) {
		e := newEnv(t)
		e.ipt.FailNext = boom
		if err := e.p.Sync(t.Context(), testState(), false); !errors.Is(err, boom) {
			t.Fatalf("Sync: %v", err)
		}
		e.sync(testState(), false)
		if len(e.ipt.Rules("filter", chainFilter)) != 3 {
			t.Errorf("rules not written after the failure:\n%s", e.ipt.Dump())
		}
	})
}

func TestModuleMissing(t *testing.T) {
	e := newEnv(t)
	e.k.ModuleAvailable = false
	err := e.p.Sync(t.Context(), testState(), false)
	var mm *ModuleMissingError
	if !errors.As(err, &mm) || mm.Module != "ip_vs" {
		t.Fatalf("got %v, want a *ModuleMissingError for ip_vs", err)
	}
	for _, s := range []string{"kernel module ip_vs is missing", "modprobe ip_vs failed", "linux-image-6.1.0-fake-amd64", "linux-modules-extra-6.1.0-fake-amd64"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q does not say %q", err, s)
		}
	}
	e.wantOps() // nothing programmed
	e.k.ModuleAvailable = true
	e.sync(testState(), false)
	e.wantDump(testStateDump)

	err = &ModuleMissingError{Module: "ip_vs", Err: syscall.ENOENT}
	if want := "kernel module ip_vs is missing (no such file or directory): install the package with this kernel's modules that provides ip_vs (Debian: linux-image-$(uname -r); Ubuntu: linux-modules-$(uname -r) or linux-modules-extra-$(uname -r)), or use mode \"iptables\""; err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("ModuleMissingError does not unwrap")
	}
}

func TestHooksRepaired(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), false)
	// Someone deletes our hook and flushes our chain: a full sync puts them
	// back, and never hooks twice.
	must(t, e.ipt.Restore(t.Context(), []byte("*filter\n-D INPUT 1\n-F OUTPOST-IPVS-FILTER\nCOMMIT\n")))
	e.sync(testState(), true)
	e.sync(testState(), true)
	if got := e.ipt.Rules("filter", "INPUT"); len(got) != 1 {
		t.Errorf("INPUT: %q", got)
	}
	if got := e.ipt.Rules("nat", "POSTROUTING"); len(got) != 1 {
		t.Errorf("POSTROUTING: %q", got)
	}
	if got := e.ipt.Rules("filter", chainFilter); len(got) != 3 {
		t.Errorf("%s: %q", chainFilter, got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
