package soak

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	vip1, vip2 := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.20")
	// A service created at 0 with a and b, a replaced by c at 100, scaled
	// to zero at 200, back with d at 300, deleted at 400 and recreated at
	// another ClusterIP with e at 401, and a write that failed at 500.
	h := &history{}
	h.add(state{at: at(0), present: true, vip: vip1, pods: []string{"a", "b"}})
	h.add(state{at: at(100), present: true, vip: vip1, pods: []string{"b", "c"}})
	h.add(state{at: at(200), present: true, vip: vip1})
	h.add(state{at: at(300), present: true, vip: vip1, pods: []string{"d"}})
	h.add(state{at: at(400)})
	h.add(state{at: at(401), present: true, vip: vip2})
	h.add(state{at: at(401.1), present: true, vip: vip2, pods: []string{"e"}})
	h.add(state{at: at(500), present: true, vip: vip2, pods: []string{"e"}, unknown: true})
	h.add(state{at: at(600), present: true, vip: vip2, pods: []string{"f"}})

	refused := fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	timeout := errors.New("i/o timeout")
	const grace = 10 * time.Second
	for _, c := range []struct {
		name   string
		start  float64
		vip    netip.Addr
		answer string
		err    error
		want   outcome
	}{
		{"an endpoint answers", 50, vip1, "a", nil, answered},
		{"a pod that is no endpoint answers", 50, vip1, "c", nil, failedWrongPod},
		{"a served service does not answer", 50, vip1, "", timeout, failedServed},
		{"a served service refuses", 50, vip1, "", refused, failedServed},
		{"within the grace of its creation it may not answer", 5, vip1, "", refused, duringChange},
		{"the replaced endpoint answers within the grace", 105, vip1, "a", nil, answered},
		{"the replaced endpoint answers after the grace", 111, vip1, "a", nil, failedWrongPod},
		{"the new endpoint answers at once", 100.5, vip1, "c", nil, answered},
		{"no answer just after a replacement", 101, vip1, "", timeout, failedServed},
		{"scaled to zero, an old endpoint answers within the grace", 205, vip1, "b", nil, answered},
		{"scaled to zero, refused within the grace", 205, vip1, "", refused, duringChange},
		{"scaled to zero, refused after the grace", 215, vip1, "", refused, refusedAsExpected},
		{"scaled to zero, refused over UDP from the host (EPERM)", 215, vip1, "", syscall.EPERM, refusedAsExpected},
		{"scaled to zero, time out after the grace", 215, vip1, "", timeout, failedNotRefused},
		{"scaled to zero, an old endpoint answers after the grace", 215, vip1, "b", nil, failedWrongPod},
		{"back from zero, refused within the grace", 305, vip1, "", refused, duringChange},
		{"back from zero, refused after the grace", 315, vip1, "", refused, failedServed},
		{"deleted: the old ClusterIP still answers within the grace", 405, vip1, "d", nil, answered},
		{"deleted: the old ClusterIP does not answer", 405, vip1, "", timeout, duringChange},
		{"recreated: the new ClusterIP does not answer yet", 405, vip2, "", timeout, duringChange},
		{"recreated: the new ClusterIP answers", 402, vip2, "e", nil, answered},
		{"recreated: the new ClusterIP answered by the old service's pod", 402, vip2, "d", nil, failedWrongPod},
		{"recreated: the new ClusterIP must answer after the grace", 412, vip2, "", timeout, failedServed},
		{"after a failed write nothing is judged", 505, vip2, "x", nil, duringChange},
		{"nor within the grace after it", 605, vip2, "x", nil, duringChange},
		{"the next write is judged again", 611, vip2, "e", nil, failedWrongPod},
	} {
		p := probe{vip: c.vip, start: at(c.start), end: at(c.start).Add(5 * time.Millisecond), answer: c.answer, err: c.err}
		if got := judge(h, p, grace); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := &history{}
	for _, s := range []int{0, 10, 20, 30} {
		h.add(state{at: t0.Add(time.Duration(s) * time.Second), pods: []string{fmt.Sprint(s)}})
	}
	for _, c := range []struct {
		from, to int
		want     string
	}{
		{-5, -1, "[]"},
		{-5, 0, "[0]"},
		{0, 0, "[0]"},
		{5, 15, "[0 10]"},
		{10, 25, "[10 20]"},
		{35, 40, "[30]"},
	} {
		var got []string
		for _, s := range h.window(t0.Add(time.Duration(c.from)*time.Second), t0.Add(time.Duration(c.to)*time.Second)) {
			got = append(got, s.pods...)
		}
		if fmt.Sprint(got) != c.want {
			t.Errorf("window(%d, %d) = %v, want %s", c.from, c.to, got, c.want)
		}
	}
	// A write recorded late keeps the order.
	h.add(state{at: t0.Add(25 * time.Second)})
	if last := h.current().at; !last.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("an older write went before the last: %v", last)
	}
}

func TestTally(t *testing.T) {
	var ty tally
	began := time.Now()
	p := probe{name: "soak/s01", proto: "tcp", from: "host", vip: netip.MustParseAddr("10.96.0.1"), start: began.Add(61500 * time.Millisecond)}
	if line := ty.add(p, answered, began); line != "" {
		t.Errorf("an answer reported as %q", line)
	}
	p.err = errors.New("i/o timeout")
	line := ty.add(p, failedServed, began)
	if want := "1:01.5 soak/s01 tcp from host to 10.96.0.1: FAILED: no answer from a served service: i/o timeout"; line != want {
		t.Errorf("failure line\n%q, want\n%q", line, want)
	}
	p.proto = "udp"
	ty.add(p, refusedAsExpected, began)
	if ty.failed() != 1 || ty.total(answered) != 1 || ty.total(refusedAsExpected) != 1 {
		t.Errorf("counts: failed %d, answered %d, refused %d", ty.failed(), ty.total(answered), ty.total(refusedAsExpected))
	}
	if fmt.Sprint(ty.keys()) != "[tcp from host udp from host]" {
		t.Errorf("keys %v", ty.keys())
	}
}
