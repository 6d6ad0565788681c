package ipvs

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

func readPort(t *testing.T, k Kernel, vip string, proto model.Protocol) *PortView {
	t.Helper()
	v, err := ReadPort(k, netip.MustParseAddrPort(vip), proto)
	if err != nil {
		t.Fatalf("ReadPort(%s/%s): %v", vip, proto, err)
	}
	return v
}

func TestReadPort(t *testing.T) {
	e := newEnv(t)
	e.sync(testState(), true)
	must(t, e.k.SetConns(key("10.96.0.10", 80, model.TCP), ap("10.0.1.2:8080"), 3, 7))
	e.k.TakeOps()

	v := readPort(t, e.k, "10.96.0.10:80", model.TCP)
	if !v.Bound || v.Server == nil {
		t.Fatalf("web: bound %v, server %v", v.Bound, v.Server)
	}
	if got := v.Server.String(); got != "10.96.0.10:80/TCP rr" {
		t.Errorf("server %q", got)
	}
	want := []Destination{{Addr: ap("10.0.1.1:8080"), Weight: 1}, {Addr: ap("10.0.1.2:8080"), Weight: 1, ActiveConns: 3, InactiveConns: 7}}
	if len(v.Server.Destinations) != 2 || v.Server.Destinations[0] != want[0] || v.Server.Destinations[1] != want[1] {
		t.Errorf("destinations %+v, want %+v", v.Server.Destinations, want)
	}

	if v := readPort(t, e.k, "10.96.0.20:443", model.TCP); v.Server == nil || !v.Server.Persistent || v.Server.Timeout != 10800 {
		t.Errorf("affinity is persistence: %+v", v.Server)
	}
	// A port without endpoints: its ClusterIP is bound (so that it is
	// refused), and there is no virtual server.
	if v := readPort(t, e.k, "10.96.0.30:80", model.TCP); !v.Bound || v.Server != nil {
		t.Errorf("port without endpoints: bound %v, server %+v", v.Bound, v.Server)
	}
	// Another protocol of a bound ClusterIP, and an address nobody uses.
	if v := readPort(t, e.k, "10.96.0.53:53", model.SCTP); !v.Bound || v.Server != nil {
		t.Errorf("other protocol: bound %v, server %+v", v.Bound, v.Server)
	}
	if v := readPort(t, e.k, "10.96.0.99:80", model.TCP); v.Bound || v.Server != nil {
		t.Errorf("unused address: bound %v, server %+v", v.Bound, v.Server)
	}
	if ops := e.k.TakeOps(); len(ops) != 0 {
		t.Errorf("ReadPort changed the kernel: %q", ops)
	}
}

// A removed endpoint that still has connections stays at weight 0 until
// they end: explain shows it as the kernel has it.
func TestReadPortDraining(t *testing.T) {
	e := newEnv(t)
	web := key("10.96.0.10", 80, model.TCP)
	e.sync(testState(), true)
	must(t, e.k.SetConns(web, ap("10.0.1.2:8080"), 2, 0))
	e.sync(testState(withEndpoints(webHTTP, "10.0.1.1:8080"), webMetrics, dnsUDP, dnsTCP, sticky, sig, empty, web6), false)
	v := readPort(t, e.k, "10.96.0.10:80", model.TCP)
	if v.Server == nil || len(v.Server.Destinations) != 2 || v.Server.Destinations[1].Weight != 0 || v.Server.Destinations[1].ActiveConns != 2 {
		t.Errorf("draining destination: %+v", v.Server)
	}
}

func TestReadPortErrors(t *testing.T) {
	k := NewFakeKernel()
	boom := errors.New("netlink: boom")
	k.FailNext("List", boom)
	if _, err := ReadPort(k, ap("10.96.0.10:80"), model.TCP); !errors.Is(err, boom) || !strings.Contains(err.Error(), "virtual servers") {
		t.Errorf("List failure: %v", err)
	}
	k.FailNext("InterfaceAddrs", boom)
	if _, err := ReadPort(k, ap("10.96.0.10:80"), model.TCP); !errors.Is(err, boom) || !strings.Contains(err.Error(), Interface) {
		t.Errorf("InterfaceAddrs failure: %v", err)
	}
	// Without ip_vs loaded there is nothing, and that is no error.
	if v, err := ReadPort(k, ap("10.96.0.10:80"), model.TCP); err != nil || v.Bound || v.Server != nil {
		t.Errorf("empty kernel: %+v, %v", v, err)
	}
}
