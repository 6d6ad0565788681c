//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReload: SIGHUP (systemctl reload) applies a new config's clusters,
// refuses a broken config as a whole, and removes a dropped cluster's rules.
func TestReload(t *testing.T) {
	alpha, beta := theLab.Cluster("alpha").Admin, theLab.Cluster("beta").Admin
	nsA, nsB := namespace(t, alpha, "reload"), namespace(t, beta, "reload")
	vipA := service(t, alpha, nsA, "web", web)
	slice(t, alpha, nsA, "web", "1", web, []ep{readyEP(ip("a1"))})
	vipB := service(t, beta, nsB, "web", web)
	slice(t, beta, nsB, "web", "1", web, []ep{readyEP(ip("b1"))})

	path := writeConfig(t, "alpha")
	d := startDaemon(t, path)
	answeredBy(t, url(vipA, 80), 3, "a1")

	hup := func(cfg string) {
		t.Helper()
		data, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// Add beta.
	hup(writeConfig(t, "alpha", "beta"))
	answeredBy(t, url(vipB, 80), 3, "b1")
	answeredBy(t, url(vipA, 80), 3, "a1")

	// A broken config changes nothing.
	broken := writeConfig(t, "alpha")
	if err := os.WriteFile(broken, []byte("mode = \"iptables\"\n[[clusters]]\nname = \"alpha\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(broken)
	eventually(t, 10*time.Second, "reload refused", func() error {
		if d.count(`reload refused`) == 0 {
			return errors.New("no 'reload refused' log line")
		}
		return nil
	})
	answeredBy(t, url(vipA, 80), 3, "a1")
	answeredBy(t, url(vipB, 80), 3, "b1")

	// Drop alpha: its rules go, beta stays.
	hup(writeConfig(t, "beta"))
	eventually(t, 20*time.Second, "alpha's rules removed", func() error {
		if s := kernelState(t); mentions(s, vipA) || strings.Contains(s, "cluster alpha") {
			return fmt.Errorf("the kernel still has alpha's service %s", vipA)
		}
		return nil
	})
	answeredBy(t, url(vipB, 80), 3, "b1")
	select {
	case <-d.done:
		t.Fatal("the daemon exited during reloads")
	default:
	}
}
