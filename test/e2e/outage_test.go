//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// TestOutageAndRestart: an unreachable apiserver and a daemon restart keep
// the rules serving, an open connection survives the restart, and the other
// cluster keeps being followed.
func TestOutageAndRestart(t *testing.T) {
	alphaC, betaC := theLab.Cluster("alpha"), theLab.Cluster("beta")
	alpha, beta := alphaC.Admin, betaC.Admin
	cfg := writeConfig(t)
	d := startDaemon(t, cfg)

	nsA, nsB := namespace(t, alpha, "outage"), namespace(t, beta, "outage")
	vipA := service(t, alpha, nsA, "web", web)
	slice(t, alpha, nsA, "web", "1", web, []ep{readyEP(ip("a1"))})
	vipB := service(t, beta, nsB, "web", web)
	slice(t, beta, nsB, "web", "1", web, []ep{readyEP(ip("b1"))})
	answeredBy(t, url(vipA, 80), 3, "a1")
	answeredBy(t, url(vipB, 80), 3, "b1")

	// Ongoing UDP flows to a service of each cluster that never changes:
	// neither the restart nor alpha's return moves them (issue 13,
	// guarantee 8: a restart clears no flow).
	flows := map[string]*udpFlow{}
	for name, c := range map[string]struct {
		admin      kubernetes.Interface
		ns, p1, p2 string
	}{"alpha": {alpha, nsA, "a1", "a2"}, "beta": {beta, nsB, "b1", "b2"}} {
		vip := service(t, c.admin, c.ns, "dns", dns)
		slice(t, c.admin, c.ns, "dns", "1", dns, []ep{readyEP(ip(c.p1)), readyEP(ip(c.p2))})
		addr := netip.AddrPortFrom(vip, 53).String()
		eventually(t, 20*time.Second, name+"'s udp service answers", func() error { _, err := udpOnce(addr); return err })
		flows[name] = startFlow(t, theLab.DialHost, addr)
	}
	flowsBegin := time.Now()

	// A long-lived connection, to check that nothing below cuts it.
	conn, err := theLab.DialHost(context.Background(), "tcp", fmt.Sprintf("%s:80", vipA))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	if got := keepAliveGet(t, conn, br); got != "a1" {
		t.Fatalf("open connection answered by %q", got)
	}

	if err := alphaC.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			alphaC.StartAPIServer(context.Background())
		}
	}()
	// Alpha is down: its rules stay; beta is still followed.
	answeredBy(t, url(vipA, 80), 5, "a1")
	slice(t, beta, nsB, "web", "1", web, []ep{readyEP(ip("b2"))})
	answeredBy(t, url(vipB, 80), 5, "b2")

	// The daemon stops: rules stay in place.
	d.stop()
	answeredBy(t, url(vipA, 80), 5, "a1")
	if got := keepAliveGet(t, conn, br); got != "a1" {
		t.Fatalf("open connection answered by %q after the daemon stopped", got)
	}

	// A change in beta while no daemon runs, then a new daemon while alpha's
	// apiserver is still down: beta's change shows that the new daemon has
	// synced, and alpha's rules from the last run must still serve.
	slice(t, beta, nsB, "web", "1", web, []ep{readyEP(ip("b1")), readyEP(ip("b2"))})
	d2 := startDaemon(t, cfg)
	answeredBy(t, url(vipB, 80), 30, "b1", "b2")
	answeredBy(t, url(vipA, 80), 5, "a1")
	if got := keepAliveGet(t, conn, br); got != "a1" {
		t.Fatalf("open connection answered by %q after the daemon restarted", got)
	}

	// Alpha comes back: the new daemon syncs it and follows changes.
	if err := alphaC.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	slice(t, alpha, nsA, "web", "1", web, []ep{readyEP(ip("a2"))})
	answeredBy(t, url(vipA, 80), 5, "a2")
	if d2.count(`cluster=alpha.*cluster synced|cluster synced.*cluster=alpha`) == 0 {
		t.Fatal("the new daemon never logged alpha as synced")
	}
	// The connection opened before all this still works: conntrack keeps
	// its DNAT to a1 although a1 is no longer an endpoint for new ones.
	if got := keepAliveGet(t, conn, br); got != "a1" {
		t.Fatalf("open connection answered by %q at the end", got)
	}
	for name, f := range flows {
		f.kept(t, name+"'s udp flow", flowsBegin)
	}
}

// keepAliveGet sends one HTTP request on an open connection.
func keepAliveGet(t *testing.T, conn net.Conn, br *bufio.Reader) string {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"); err != nil {
		t.Fatalf("writing on the open connection: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading from the open connection: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}
