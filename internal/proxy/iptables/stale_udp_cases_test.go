package iptables

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// udpPorts are UDP service ports of alpha, each with its own VIP, and one
// TCP port whose flows are never forgotten.
var (
	shrinking  = svc("alpha", "default", "shrink", "dns", model.UDP, "10.96.0.1", 53, "10.0.1.1:5353", "10.0.1.2:5353")
	deleted    = svc("alpha", "default", "gone", "dns", model.UDP, "10.96.0.2", 53, "10.0.2.1:5353")
	scaled     = svc("alpha", "default", "zero", "dns", model.UDP, "10.96.0.3", 53, "10.0.3.1:5353")
	unchanged  = svc("alpha", "default", "same", "dns", model.UDP, "10.96.0.4", 53, "10.0.4.1:5353")
	tcpPort    = svc("alpha", "default", "web", "http", model.TCP, "10.96.0.5", 80, "10.0.5.1:8080", "10.0.5.2:8080")
	shrinking6 = svc("alpha", "default", "shrink", "dns", model.UDP, "fd00:96::1", 53, "[fd00:1::1]:5353", "[fd00:1::2]:5353")
)

func udpPortsState(synced bool, ports ...*model.ServicePort) *model.State {
	return state(cluster("alpha", synced, alphaCIDRs, ports...))
}

func allUDPPorts() *model.State {
	return udpPortsState(true, shrinking, deleted, scaled, unchanged, tcpPort, shrinking6)
}

func ctProxier(ct Conntrack, f *Fake, v6 bool) *Proxier {
	return New(Options{Runner: f, IPv6: v6, MasqueradeMark: testMark, Conntrack: ct})
}

func wantBatches(t *testing.T, ct *recordingConntrack, what string, want ...[]string) {
	t.Helper()
	got := ct.takeBatches()
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("%s: forgot %q, want %q", what, got, want)
	}
}

// TestStaleUDPOneBatchPerSync: a sync in which one port loses an endpoint,
// one service is deleted and one is scaled to zero forgets the flows to
// exactly the endpoints that went, all three ports' in one batch; a TCP
// port's and an unchanged port's flows are left alone, and endpoints
// coming back strand nothing.
func TestStaleUDPOneBatchPerSync(t *testing.T) {
	ct := &recordingConntrack{}
	p := ctProxier(ct, NewFake(), false)
	mustSync(t, p, allUDPPorts(), true)
	wantBatches(t, ct, "first sync")

	mustSync(t, p, udpPortsState(true, withEndpoints(shrinking, "10.0.1.2:5353"), withEndpoints(scaled),
		unchanged, withEndpoints(tcpPort, "10.0.5.2:8080"), shrinking6), false)
	wantBatches(t, ct, "after the changes", []string{
		"10.96.0.1:53 -> 10.0.1.1:5353",
		"10.96.0.2:53 -> 10.0.2.1:5353",
		"10.96.0.3:53 -> 10.0.3.1:5353",
	})

	mustSync(t, p, allUDPPorts(), false)
	wantBatches(t, ct, "endpoints back")
}

// TestStaleUDPIPv6: the IPv6 Proxier forgets its own family's flows.
func TestStaleUDPIPv6(t *testing.T) {
	ct := &recordingConntrack{}
	p := ctProxier(ct, NewFake(), true)
	mustSync(t, p, allUDPPorts(), true)
	mustSync(t, p, udpPortsState(true, unchanged, withEndpoints(shrinking6, "[fd00:1::2]:5353")), false)
	wantBatches(t, ct, "one IPv6 endpoint gone", []string{"[fd00:96::1]:53 -> [fd00:1::1]:5353"})
}

// TestStaleUDPNothingOnRestart: a restarted daemon's first full sync finds
// its predecessor's rules in the kernel and forgets no flow, nor does a
// periodic full sync; a full sync forgets only the flows of what changed.
func TestStaleUDPNothingOnRestart(t *testing.T) {
	f := NewFake()
	mustSync(t, ctProxier(&recordingConntrack{}, f, false), allUDPPorts(), true)

	ct := &recordingConntrack{}
	p := ctProxier(ct, f, false)
	mustSync(t, p, allUDPPorts(), true)
	wantBatches(t, ct, "first sync after a restart")
	mustSync(t, p, allUDPPorts(), true)
	wantBatches(t, ct, "periodic full sync")

	changed := allUDPPorts()
	modeltest.ClusterOf(changed, "alpha").Ports[shrinking.Key] = withEndpoints(shrinking, "10.0.1.2:5353")
	mustSync(t, p, changed, true)
	wantBatches(t, ct, "full sync with one change", []string{"10.96.0.1:53 -> 10.0.1.1:5353"})
}

// TestStaleUDPUnsyncedCluster: a cluster that turns unsynced (its source
// changed in a reload) keeps its rules, so its flows stay; once it has
// synced again, the flows to the endpoints it lost meanwhile are
// forgotten, and only those.
func TestStaleUDPUnsyncedCluster(t *testing.T) {
	ct := &recordingConntrack{}
	p := ctProxier(ct, NewFake(), false)
	mustSync(t, p, allUDPPorts(), true)

	mustSync(t, p, udpPortsState(false), false)
	wantBatches(t, ct, "cluster not synced")
	mustSync(t, p, udpPortsState(false, unchanged), false)
	wantBatches(t, ct, "cluster still not synced")

	mustSync(t, p, udpPortsState(true, withEndpoints(shrinking, "10.0.1.2:5353"), deleted, scaled, unchanged, tcpPort), false)
	wantBatches(t, ct, "cluster synced again", []string{"10.96.0.1:53 -> 10.0.1.1:5353"})
	mustSync(t, p, udpPortsState(true, withEndpoints(shrinking, "10.0.1.2:5353"), deleted, scaled, unchanged, tcpPort), false)
	wantBatches(t, ct, "next sync")
}

// TestStaleUDPRemovedCluster: a cluster removed from the config takes its
// rules, and so its flows, with it.
func TestStaleUDPRemovedCluster(t *testing.T) {
	ct := &recordingConntrack{}
	p := ctProxier(ct, NewFake(), false)
	mustSync(t, p, udpPortsState(true, deleted), true)
	mustSync(t, p, state(cluster("beta", true, betaCIDRs)), false)
	wantBatches(t, ct, "cluster removed", []string{"10.96.0.2:53 -> 10.0.2.1:5353"})
}

// TestStaleUDPNodePort: the flows that came in at a served node port, at
// each of this host's addresses, are forgotten with those to the VIP.
func TestStaleUDPNodePort(t *testing.T) {
	ct := &recordingConntrack{}
	p := ctProxier(ct, NewFake(), false)
	np := func(eps ...string) *model.State {
		st := udpPortsState(true, modeltest.WithNodePort(withEndpoints(shrinking, eps...), 30053, true))
		st.Clusters[0].ServeNodePorts = true
		st.HostAddrs = []netip.Addr{netip.MustParseAddr(hostIP), netip.MustParseAddr(hostIP6)}
		return st
	}
	mustSync(t, p, np("10.0.1.1:5353", "10.0.1.2:5353"), true)
	mustSync(t, p, np("10.0.1.2:5353"), false)
	wantBatches(t, ct, "one endpoint gone", []string{
		"10.96.0.1:53 -> 10.0.1.1:5353",
		hostIP + ":30053 -> 10.0.1.1:5353",
	})
}

// TestStaleUDPFailedBatchLogsOnce: a batch the kernel refuses is one
// warning, whatever its size, and the sync still succeeds.
func TestStaleUDPFailedBatchLogsOnce(t *testing.T) {
	ct := &recordingConntrack{err: errors.New("netlink: operation not permitted")}
	logs := &countingHandler{}
	p := New(Options{Runner: NewFake(), MasqueradeMark: testMark, Conntrack: ct, Log: slog.New(logs)})
	// The first sync's batch is the flows that left before its rules.
	mustSync(t, p, allUDPPorts(), true)
	if got := logs.warnings(); len(got) != 1 {
		t.Fatalf("%d warnings (%q) after the first sync, want 1 for its failed batch", len(got), got)
	}
	mustSync(t, p, udpPortsState(true, unchanged), false)
	if got := logs.warnings(); len(got) != 2 {
		t.Fatalf("%d warnings (%q), want 1 more for the failed batch", len(got), got)
	}
}

// countingHandler keeps the messages of the warnings logged.
type countingHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		h.msgs = append(h.msgs, r.Message)
		h.mu.Unlock()
	}
	return nil
}

func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) warnings() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}
