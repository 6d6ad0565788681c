package ipvs

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

func TestFakeIPSet(t *testing.T) {
	f := NewFakeIPSet()
	ctx := t.Context()
	vips, ports := ourSets(false)
	script := vips.appendSwap(nil, []string{"10.96.0.1", "10.96.0.2"})
	script = ports.appendSwap(script, []string{"10.96.0.1,tcp:80", "10.96.0.2,udp:53"})
	must(t, f.Restore(ctx, script))
	// Again, with other members: -exist makes create a no-op.
	must(t, f.Restore(ctx, vips.appendSwap(nil, []string{"10.96.0.3"})))
	want := `OUTPOST-IPVS-PORTS hash:ip,port family inet
  10.96.0.1,tcp:80
  10.96.0.2,udp:53
OUTPOST-IPVS-VIPS hash:ip family inet
  10.96.0.3
`
	if got := f.Dump(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	for _, bad := range []string{
		"create OUTPOST-IPVS-VIPS hash:ip,port family inet", // same name, other type
		"add OUTPOST-IPVS-VIPS 10.96.0.1,tcp:80",
		"add OUTPOST-IPVS-PORTS 10.96.0.1",
		"add OUTPOST-IPVS-PORTS 10.96.0.1,icmp:80",
		"add OUTPOST-IPVS-VIPS fd00::1",
		"add NOPE 10.96.0.1",
		"swap OUTPOST-IPVS-VIPS OUTPOST-IPVS-PORTS",
		"frobnicate OUTPOST-IPVS-VIPS",
		"create OUTPOST-IPVS-AVERYVERYVERYLONGNAME-X hash:ip",
	} {
		if err := f.Restore(ctx, []byte(bad+"\n")); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}

	// Not transactional, like ipset: lines before the bad one stay.
	err := f.Restore(ctx, []byte("add OUTPOST-IPVS-VIPS 10.96.0.9\nadd OUTPOST-IPVS-VIPS nonsense\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("got %v, want an error naming line 2", err)
	}
	if m := f.Members("OUTPOST-IPVS-VIPS"); len(m) != 2 {
		t.Errorf("members %q: the first line should have been applied", m)
	}

	f.InUse = func(name string) bool { return name == "OUTPOST-IPVS-VIPS" }
	if err := f.Restore(ctx, []byte("destroy OUTPOST-IPVS-VIPS\n")); err == nil {
		t.Errorf("destroyed a set in use")
	}
	must(t, f.Restore(ctx, []byte("destroy OUTPOST-IPVS-PORTS\n")))
	if names, _ := f.List(ctx); len(names) != 1 || names[0] != "OUTPOST-IPVS-VIPS" {
		t.Errorf("sets: %q", names)
	}
}

func TestIsOurSet(t *testing.T) {
	for name, want := range map[string][2]bool{ // {as IPv4's, as IPv6's}
		"OUTPOST-IPVS-VIPS":       {true, false},
		"OUTPOST-IPVS-PORTS-TMP":  {true, false},
		"OUTPOST-IPVS-VIPS6":      {false, true},
		"OUTPOST-IPVS-PORTS6-TMP": {false, true},
		"KUBE-CLUSTER-IP":         {false, false},
		"OUTPOST-OTHER":           {false, false},
	} {
		if got := [2]bool{isOurSet(name, false), isOurSet(name, true)}; got != want {
			t.Errorf("isOurSet(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestFakeKernelErrors(t *testing.T) {
	k := NewFakeKernel()
	s := Service{ServiceKey: key("10.96.0.1", 80, model.TCP), Scheduler: "rr"}
	d := Destination{Addr: ap("10.0.0.1:80"), Weight: 1}
	if err := k.AddService(s); err == nil {
		t.Errorf("AddService without ip_vs loaded: no error")
	}
	if vss, err := k.List(); err != nil || len(vss) != 0 {
		t.Errorf("List without ip_vs: %v, %v", vss, err)
	}
	must(t, k.EnsureModule(t.Context()))
	must(t, k.AddService(s))
	for name, err := range map[string]error{
		"AddService twice":         k.AddService(s),
		"UpdateService missing":    k.UpdateService(Service{ServiceKey: key("10.96.0.2", 80, model.TCP), Scheduler: "rr"}),
		"DelService missing":       k.DelService(Service{ServiceKey: key("10.96.0.2", 80, model.TCP)}),
		"AddService bad sched":     k.AddService(Service{ServiceKey: key("10.96.0.3", 80, model.TCP), Scheduler: "nope"}),
		"AddDest other family":     k.AddDest(s, Destination{Addr: ap("[fd00::1]:80")}),
		"UpdateDest missing":       k.UpdateDest(s, d),
		"DelDest missing":          k.DelDest(s, d),
		"AddAddr without outpost0": k.AddAddr(netip.MustParseAddr("10.96.0.1")),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	must(t, k.AddDest(s, d))
	if err := k.AddDest(s, d); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("AddDest twice: %v, want EEXIST", err)
	}

	// Only changes are logged; deleting the interface takes its addresses.
	k.TakeOps()
	must(t, k.EnsureInterface())
	must(t, k.EnsureInterface())
	must(t, k.AddAddr(netip.MustParseAddr("10.96.0.1")))
	must(t, k.AddAddr(netip.MustParseAddr("10.96.0.1")))
	must(t, k.SetSysctl("net/ipv4/vs/conntrack", "1"))
	must(t, k.SetSysctl("net/ipv4/vs/conntrack", "1"))
	must(t, k.DeleteInterface())
	must(t, k.DelAddr(netip.MustParseAddr("10.96.0.1")))
	want := []string{"create-interface outpost0", "add-addr 10.96.0.1", "sysctl net/ipv4/vs/conntrack=1", "delete-interface outpost0"}
	if got := k.TakeOps(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ops %q, want %q", got, want)
	}
	if addrs, _ := k.InterfaceAddrs(); len(addrs) != 0 {
		t.Errorf("addresses survived their interface: %v", addrs)
	}
}
