//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/test/lab"
)

// followWithin is how soon after the apiserver answers again, or after a
// dead watch is noticed, a change must reach the rules (issue 13).
const followWithin = 10 * time.Second

// TestWatchRecovery: the daemon watches alpha through a relay that the test
// breaks. Started while the apiserver is unreachable, after a frozen
// connection, and after outages of 10 s and (without -short) 3 min, a
// change is followed within followWithin of the apiserver answering again
// or of the dead connection being noticed.
func TestWatchRecovery(t *testing.T) {
	if os.Getenv("KO_E2E_REMOTE") != "" {
		t.Skip("a remote lab's apiservers are not the lab's to stand in front of")
	}
	alphaC := theLab.Cluster("alpha")
	alpha := alphaC.Admin
	relay, err := alphaC.Relay()
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "alpha")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(data), alphaC.Kubeconfig, relay.Kubeconfig, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := configValue(t, cfg, "status_socket")
	ns := namespace(t, alpha, "recovery")
	vip := service(t, alpha, ns, "web", web)
	at := url(vip, 80)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})

	// Started while the apiserver is unreachable: by 30 s, client-go's
	// own backoff would wait 13 to 51 s between tries.
	if err := relay.Refuse(); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg)
	time.Sleep(30 * time.Second)
	if c := clusterIn(statusJSON(t, sock), "alpha"); c == nil || c.Reachable || c.UnreachableSince.IsZero() {
		t.Errorf("status while the apiserver is unreachable: %+v; want unreachable, since when", c)
	}
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a2"))})
	resumed := time.Now()
	if err := relay.Resume(); err != nil {
		t.Fatal(err)
	}
	followed(t, "started while unreachable, after the apiserver answered", resumed, at, "a2")

	t.Run("frozen connection", func(t *testing.T) { frozen(t, d, relay, at) })
	t.Run("outage of 10s", func(t *testing.T) { outage(t, relay, at, 10*time.Second) })
	t.Run("outage of 3m", func(t *testing.T) {
		if testing.Short() {
			t.Skip("3 minutes; -short")
		}
		outage(t, relay, at, 3*time.Minute)
	})

	r := statusJSON(t, sock)
	if c := clusterIn(r, "alpha"); c == nil || !c.Reachable || c.LastHeard.IsZero() || time.Since(c.LastHeard) > 2*time.Minute {
		t.Errorf("status at the end: %+v; want reachable and heard from lately", c)
	}
}

// frozen freezes the daemon's connections to the apiserver, changes the
// slice behind them, and measures when the daemon notices and when it
// follows the change.
func frozen(t *testing.T, d *daemon, relay *lab.Relay, at string) {
	alpha := theLab.Cluster("alpha").Admin
	answeredBy(t, at, 3, "a2")
	const restarted = `msg="watch restarted".*cluster=alpha`
	before := d.count(restarted)
	relay.Freeze()
	froze := time.Now()
	slice(t, alpha, "recovery", "web", "1", web, []ep{readyEP(ip("a3"))})
	// The HTTP/2 ping notices in 10 to 15 s; over HTTP/1.1, the watchdog
	// after 90 s without a bookmark.
	var noticed time.Time
	eventually(t, 2*time.Minute, "a log line of a restarted watch", func() error {
		if d.count(restarted) == before {
			return errors.New("none yet")
		}
		noticed = time.Now()
		return nil
	})
	t.Logf("frozen connection noticed after %s", noticed.Sub(froze).Round(100*time.Millisecond))
	followed(t, "after the frozen connection was noticed", noticed, at, "a3")
	if err := relay.Resume(); err != nil {
		t.Fatal(err)
	}

	o := &observed{daemon: d, http: &http.Client{
		Transport: &http.Transport{DialContext: theLab.DialHost, DisableKeepAlives: true, Proxy: nil},
		Timeout:   5 * time.Second,
	}}
	s, err := o.scrape()
	if err != nil {
		t.Fatal(err)
	}
	const m = "kube_outpost_watch_restarts_total"
	if n := s.value(m, `cluster="alpha",reason="connection_lost"`) + s.value(m, `cluster="alpha",reason="silent"`); n == 0 {
		t.Errorf("%s counts no restart of the frozen watches: %v", m, s[m])
	}
}

// outage refuses the daemon's connections for length, changes the slice
// meanwhile, and checks that the change is followed within followWithin of
// the end, and so is one made afterwards.
func outage(t *testing.T, relay *lab.Relay, at string, length time.Duration) {
	alpha := theLab.Cluster("alpha").Admin
	if err := relay.Refuse(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	time.Sleep(length / 2)
	slice(t, alpha, "recovery", "web", "1", web, []ep{readyEP(ip("a1"))})
	time.Sleep(length - time.Since(begin))
	resumed := time.Now()
	if err := relay.Resume(); err != nil {
		t.Fatal(err)
	}
	followed(t, "a change made during the outage, after it", resumed, at, "a1")
	changed := time.Now()
	slice(t, alpha, "recovery", "web", "1", web, []ep{readyEP(ip("a2"))})
	followed(t, "a change made after the outage", changed, at, "a2")
}

// followed waits until only pod answers at url, logs how long after since
// that was, and fails the test if it was later than followWithin.
func followed(t *testing.T, what string, since time.Time, at, pod string) {
	t.Helper()
	followedIn(t, theLab, what, since, at, pod)
}

// followedIn is followed from the host of lab l; it returns the time taken.
func followedIn(t *testing.T, l *lab.Lab, what string, since time.Time, at, pod string) time.Duration {
	t.Helper()
	var took time.Duration
	eventually(t, followWithin+30*time.Second, what+": answers from "+pod, func() error {
		for range 3 {
			// A short timeout: the wait for an address without rules
			// yet would count in the time measured. The lab's round
			// trip is well under a millisecond.
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			body, err := l.HTTPGet(ctx, at)
			cancel()
			if err != nil {
				return err
			}
			if body != pod {
				return fmt.Errorf("answered by %s", body)
			}
		}
		took = time.Since(since)
		return nil
	})
	t.Logf("%s: followed after %s", what, took.Round(100*time.Millisecond))
	if took > followWithin {
		t.Errorf("%s: followed after %s, want within %s", what, took, followWithin)
	}
	return took
}
