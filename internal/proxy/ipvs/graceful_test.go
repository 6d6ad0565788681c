package ipvs

import (
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// gracefulState has one port of each protocol with endpoints a and b.
func gracefulState(eps ...string) *model.State {
	if eps == nil {
		eps = []string{"a", "b"}
	}
	var tcpEps, udpEps, sctpEps []string
	for _, e := range eps {
		n := map[string]string{"a": "1", "b": "2"}[e]
		tcpEps = append(tcpEps, "10.0.0."+n+":80")
		udpEps = append(udpEps, "10.0.0."+n+":53")
		sctpEps = append(sctpEps, "10.0.0."+n+":3868")
	}
	return state(cluster("alpha", true, alphaCIDRs,
		svc("alpha", "default", "g", "tcp", model.TCP, "10.96.0.10", 80, tcpEps...),
		svc("alpha", "default", "g", "udp", model.UDP, "10.96.0.10", 53, udpEps...),
		svc("alpha", "default", "g", "sctp", model.SCTP, "10.96.0.10", 3868, sctpEps...),
	))
}

var (
	gTCP  = key("10.96.0.10", 80, model.TCP)
	gUDP  = key("10.96.0.10", 53, model.UDP)
	gSCTP = key("10.96.0.10", 3868, model.SCTP)
)

func TestGracefulTermination(t *testing.T) {
	e := newEnv(t)
	e.sync(gracefulState(), false)
	// b has connections on every port.
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 1, 2))
	must(t, e.k.SetConns(gUDP, ap("10.0.0.2:53"), 0, 1))
	must(t, e.k.SetConns(gSCTP, ap("10.0.0.2:3868"), 1, 0))
	e.k.TakeOps()

	// b goes: TCP and SCTP drain at weight 0, UDP goes at once.
	e.sync(gracefulState("a"), false)
	e.wantOps(
		"del-dest 10.96.0.10:53/UDP 10.0.0.2:53",
		"update-dest 10.96.0.10:80/TCP 10.0.0.2:80 weight 0",
		"update-dest 10.96.0.10:3868/SCTP 10.0.0.2:3868 weight 0",
	)
	if !strings.Contains(e.k.Dump(), "-> 10.0.0.2:80 weight 0 active 1 inactive 2") {
		t.Errorf("draining destination:\n%s", e.k.Dump())
	}

	// While connections last, it stays, and nothing is written.
	e.clk.Step(time.Minute)
	e.sync(gracefulState("a"), false)
	e.wantOps()

	// The TCP connections end: deleted at the next sync. SCTP still has
	// one.
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 0, 0))
	e.sync(gracefulState("a"), false)
	e.wantOps("del-dest 10.96.0.10:80/TCP 10.0.0.2:80")

	// GracefulTimeout after it was zeroed, it goes, connections or not.
	e.clk.Step(defaultGracefulTimeout - time.Minute - time.Second)
	e.sync(gracefulState("a"), false)
	e.wantOps()
	e.clk.Step(time.Second)
	e.sync(gracefulState("a"), false)
	e.wantOps("del-dest 10.96.0.10:3868/SCTP 10.0.0.2:3868")
	if len(e.p.zeroed) != 0 {
		t.Errorf("still tracking %v", e.p.zeroed)
	}
}

func TestGracefulWithoutConnectionsDeletesAtOnce(t *testing.T) {
	e := newEnv(t)
	e.sync(gracefulState(), false)
	e.k.TakeOps()
	e.sync(gracefulState("a"), false)
	e.wantOps(
		"del-dest 10.96.0.10:53/UDP 10.0.0.2:53",
		"del-dest 10.96.0.10:80/TCP 10.0.0.2:80",
		"del-dest 10.96.0.10:3868/SCTP 10.0.0.2:3868",
	)
}

func TestEndpointComesBackWhileDraining(t *testing.T) {
	e := newEnv(t)
	e.sync(gracefulState(), false)
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 3, 0))
	e.sync(gracefulState("a"), false)
	e.k.TakeOps()

	e.clk.Step(4 * time.Minute)
	e.sync(gracefulState(), false)
	e.wantOps(
		"add-dest 10.96.0.10:53/UDP 10.0.0.2:53 weight 1",
		"update-dest 10.96.0.10:80/TCP 10.0.0.2:80 weight 1",
		"add-dest 10.96.0.10:3868/SCTP 10.0.0.2:3868 weight 1",
	)

	// Removed again: the clock starts over, it is not 4 minutes old.
	e.sync(gracefulState("a"), false)
	e.k.TakeOps()
	e.clk.Step(2 * time.Minute)
	e.sync(gracefulState("a"), false)
	e.wantOps()
	e.clk.Step(3 * time.Minute)
	e.sync(gracefulState("a"), false)
	e.wantOps("del-dest 10.96.0.10:80/TCP 10.0.0.2:80")
}

func TestDrainingAcrossRestart(t *testing.T) {
	e := newEnv(t)
	e.sync(gracefulState(), false)
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 1, 0))
	e.sync(gracefulState("a"), false)
	e.clk.Step(4 * time.Minute)
	e.k.TakeOps()

	// A restart forgets when b was zeroed: its clock starts when the new
	// Proxier first sees it, so it gets a full GracefulTimeout more.
	e.restart()
	e.sync(gracefulState("a"), false)
	e.wantOps()
	e.clk.Step(defaultGracefulTimeout - time.Second)
	e.sync(gracefulState("a"), false)
	e.wantOps()
	e.clk.Step(time.Second)
	e.sync(gracefulState("a"), false)
	e.wantOps("del-dest 10.96.0.10:80/TCP 10.0.0.2:80")
}

func TestServiceRemovedWhileDraining(t *testing.T) {
	e := newEnv(t)
	e.sync(gracefulState(), false)
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 1, 0))
	e.sync(gracefulState("a"), false)
	e.k.TakeOps()
	// The service loses all endpoints: deleted at once, as kube-proxy does.
	e.sync(state(cluster("alpha", true, alphaCIDRs,
		svc("alpha", "default", "g", "tcp", model.TCP, "10.96.0.10", 80))), false)
	e.wantOps(
		"del-service 10.96.0.10:53/UDP",
		"del-service 10.96.0.10:80/TCP",
		"del-service 10.96.0.10:3868/SCTP",
	)
	if len(e.p.zeroed) != 0 {
		t.Errorf("still tracking %v", e.p.zeroed)
	}
}

func TestResyncWhileDraining(t *testing.T) {
	e := newEnv(t)
	e.opt.GracefulTimeout = 10 * time.Second
	e.restart()
	e.sync(gracefulState(), false)
	if e.clk.HasWaiters() {
		t.Errorf("a resync is scheduled while nothing drains")
	}
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 1, 0))
	e.sync(gracefulState("a"), false)

	// The next look is due when the timeout ends (sooner than drainPoll).
	e.clk.Step(9 * time.Second)
	if e.resyncs != 0 {
		t.Fatalf("resync after 9s")
	}
	e.clk.Step(time.Second)
	if e.resyncs != 1 {
		t.Fatalf("resyncs = %d after the graceful timeout, want 1", e.resyncs)
	}
	// The sync that follows deletes it, and schedules nothing more.
	e.sync(gracefulState("a"), false)
	if e.clk.HasWaiters() {
		t.Errorf("a resync is still scheduled")
	}

	// With the default timeout, the drain is looked at every drainPoll.
	e.opt.GracefulTimeout = 0
	e.restart()
	e.sync(gracefulState(), false)
	must(t, e.k.SetConns(gTCP, ap("10.0.0.2:80"), 1, 0))
	e.sync(gracefulState("a"), false)
	e.clk.Step(drainPoll)
	if e.resyncs != 2 {
		t.Errorf("resyncs = %d after drainPoll, want 2", e.resyncs)
	}
}
