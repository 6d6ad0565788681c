package iptables

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// allowingExternal is udpPortsState with external IPs from 192.0.2.0/24 allowed.
func allowingExternal(ports ...*model.ServicePort) *model.State {
	st := udpPortsState(true, ports...)
	st.Clusters[0].AllowExternalIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	return st
}

func wantUndiverted(t *testing.T, ct *recordingConntrack, what string, want ...[]string) {
	t.Helper()
	got := ct.takeUndiverted()
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("%s: forgot the flows without DNAT of %q, want %q", what, got, want)
	}
}

// TestUndiverted: the flows without DNAT of a VIP are forgotten in the
// sync that first sends it to endpoints, whatever the protocol: the first
// sync (a restart's too: what left before our rules is stale whoever made
// them), a port that gets endpoints back, a new service, a VIP that moved.
// A port that keeps its endpoints, or has none, forgets nothing; neither do
// external IPs or node ports, whose flows without DNAT may be live.
func TestUndiverted(t *testing.T) {
	ct := &recordingConntrack{}
	p := ctProxier(ct, NewFake(), false)
	withExt := *unchanged
	withExt.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.4")}
	mustSync(t, p, allowingExternal(shrinking, withEndpoints(scaled), &withExt, tcpPort), true)
	wantUndiverted(t, ct, "first sync", []string{"TCP 10.96.0.5:80", "UDP 10.96.0.1:53", "UDP 10.96.0.4:53"})

	mustSync(t, p, allowingExternal(shrinking, withEndpoints(scaled), &withExt, tcpPort), false)
	wantUndiverted(t, ct, "nothing changed")

	moved := svc("alpha", "default", "web", "http", model.TCP, "10.96.0.6", 80, "10.0.5.1:8080")
	mustSync(t, p, allowingExternal(withEndpoints(shrinking, "10.0.1.2:5353"), scaled, &withExt, moved, deleted), false)
	wantUndiverted(t, ct, "endpoints back, a VIP moved, a new service",
		[]string{"TCP 10.96.0.6:80", "UDP 10.96.0.2:53", "UDP 10.96.0.3:53"})

	mustSync(t, p, allowingExternal(withEndpoints(shrinking), scaled, &withExt, moved, deleted), false)
	wantUndiverted(t, ct, "scaled to zero")
}

// TestUndivertedAfterFlush: once the probe found our rules gone, the sync
// that repairs them forgets the flows without DNAT of every VIP it serves:
// any of them may have been tried while the rules were gone. A flush
// found while that sync runs is for the next one, and a failed repair
// hands it on to the next attempt.
func TestUndivertedAfterFlush(t *testing.T) {
	ct := &recordingConntrack{}
	fake := NewFake()
	p := ctProxier(ct, fake, false)
	st := func() *model.State { return allowingExternal(shrinking, withEndpoints(scaled), unchanged, tcpPort) }
	all := []string{"TCP 10.96.0.5:80", "UDP 10.96.0.1:53", "UDP 10.96.0.4:53"}
	mustSync(t, p, st(), true)
	wantUndiverted(t, ct, "first sync", all)

	p.stale.Flushed()
	fake.FailNext = errors.New("xtables lock held")
	if err := p.Sync(t.Context(), st(), true); err == nil {
		t.Fatal("the failing repair succeeded")
	}
	wantUndiverted(t, ct, "a failed repair")
	mustSync(t, p, st(), true)
	wantUndiverted(t, ct, "the repair after a flush", all)

	mustSync(t, p, st(), true)
	wantUndiverted(t, ct, "a full sync without a flush")
}
