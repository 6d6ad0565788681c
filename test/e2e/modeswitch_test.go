//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// switchFrom is the mode TestModeSwitch starts in before the mode under
// test takes over.
var switchFrom = envOr("KO_E2E_SWITCH_FROM", "iptables")

// TestModeSwitch: a host switched from another mode to the mode under test
// (a config edit and a restart, or mode = "auto" finding a better mode
// after an upgrade) keeps every ClusterIP answering throughout: the new
// mode's rules are in place before the old mode's are removed, and once the
// new daemon is ready nothing of the old mode is left.
func TestModeSwitch(t *testing.T) {
	if switchFrom == mode {
		t.Skipf("the mode under test is %s, the mode switched from", mode)
	}
	old := proxy.Lookup(config.Mode(switchFrom))
	if old == nil {
		t.Fatalf("KO_E2E_SWITCH_FROM=%s is not a mode of this build", switchFrom)
	}
	alpha := theLab.Cluster("alpha").Admin
	ns := namespace(t, alpha, "modeswitch")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1")), readyEP(ip("a2"))})

	before := configInMode(t, switchFrom)
	d := startDaemon(t, before)
	answeredBy(t, url(vip, 80), 10, "a1", "a2")

	// Probes every 20 ms from now until the new mode has served a while.
	pr := &switchProbes{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pr.run(ctx, url(vip, 80)) }()
	defer func() { cancel(); wg.Wait() }()

	time.Sleep(300 * time.Millisecond)
	d.stop()
	after := configInMode(t, mode)
	switched := time.Now()
	d2 := startDaemon(t, after)
	eventually(t, 30*time.Second, "the new daemon ready", func() error {
		if d2.count(`msg=ready`) == 0 {
			return fmt.Errorf("no ready line yet")
		}
		return nil
	})
	ready := time.Since(switched)
	// The old mode's objects went when the new mode was ready, before
	// READY=1: only look after a while of serving in the new mode.
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()

	sent, failed := pr.result()
	t.Logf("switch %s -> %s: ready %s after the restart; %d probes, %d failed", switchFrom, mode, ready.Round(time.Millisecond), sent, len(failed))
	if len(failed) > 0 {
		t.Errorf("the ClusterIP did not answer during the switch:\n%s", strings.Join(failed, "\n"))
	}
	if sent < 50 {
		t.Errorf("only %d probes were sent: the switch was not watched", sent)
	}
	var inUse bool
	if needsBPFHost(switchFrom) {
		// Its pins are on the lab host's bpffs, which InUse, here in
		// the test's mount namespace, would not see.
		inUse = pinsIn(t, theLab) != ""
	} else if err := lab.InNetns(theLab.HostNS, func() error { inUse = old.InUse(context.Background()); return nil }); err != nil {
		t.Fatal(err)
	}
	if inUse {
		t.Errorf("%s mode's objects are still there after the switch:\n%s", switchFrom, kernelState(t))
	}
	if d2.count(`msg="removing what another mode left \(mode switched\)" mode=`+regexp.QuoteMeta(switchFrom)) != 1 {
		t.Errorf("no log line about removing %s mode's objects:\n%s", switchFrom, d2.log.String())
	}
	answeredBy(t, url(vip, 80), 10, "a1", "a2")
}

// configInMode is writeConfig for alpha alone, in mode m.
func configInMode(t *testing.T, m string) string {
	t.Helper()
	path := writeConfig(t, "alpha")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = regexp.MustCompile(`(?m)^mode = ".*"$`).ReplaceAll(data, []byte(fmt.Sprintf("mode = %q", m)))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// switchProbes are HTTP requests to one ClusterIP, one at a time.
type switchProbes struct {
	mu     sync.Mutex
	sent   int
	failed []string
}

func (p *switchProbes) run(ctx context.Context, u string) {
	began := time.Now()
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := theLab.HTTPGet(rctx, u)
		cancel()
		if ctx.Err() != nil {
			return // cut short by the end, not a failure
		}
		p.mu.Lock()
		p.sent++
		if err != nil {
			p.failed = append(p.failed, fmt.Sprintf("  at %s: %v", time.Since(began).Round(time.Millisecond), err))
		}
		p.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *switchProbes) result() (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.failed
}
