package ipvs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// prepareFake runs prepareHost against k, with modprobe recorded and
// sysctls read from k, as /proc/sys would show them.
func prepareFake(t *testing.T, k *FakeKernel, scheduler string, modErr error) ([]string, error) {
	t.Helper()
	var loaded []string
	mod := func(_ context.Context, m string) error {
		loaded = append(loaded, m)
		return modErr
	}
	read := func(name string) (string, error) {
		if v := k.Sysctl(name); v != "" {
			return v + "\n", nil
		}
		return "0\n", nil // the kernel's default for both
	}
	return loaded, prepareHost(t.Context(), k, scheduler, mod, read)
}

func TestPrepareSetsARPSysctls(t *testing.T) {
	k := NewFakeKernel()
	mods, err := prepareFake(t, k, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mods, []string{"ip_vs_rr"}) {
		t.Errorf("modprobe %v, want ip_vs_rr", mods)
	}
	for name, want := range map[string]string{
		"net/ipv4/conf/all/arp_ignore":          "1",
		"net/ipv4/conf/all/arp_announce":        "2",
		"net/ipv4/vs/conntrack":                 "1",
		"net/ipv4/vs/conn_reuse_mode":           "0",
		"net/ipv4/vs/expire_nodest_conn":        "1",
		"net/ipv4/vs/expire_quiescent_template": "1",
	} {
		if got := k.Sysctl(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}

	// A second run (a restart) writes nothing.
	k.TakeOps()
	if _, err := prepareFake(t, k, "", nil); err != nil {
		t.Fatal(err)
	}
	if ops := k.TakeOps(); len(ops) != 0 {
		t.Errorf("second prepare changed %v", ops)
	}
}

// TestPrepareKeepsStricterARP: an admin's stricter values stay; a weaker
// one is raised.
func TestPrepareKeepsStricterARP(t *testing.T) {
	k := NewFakeKernel()
	for name, v := range map[string]string{"net/ipv4/conf/all/arp_ignore": "8", "net/ipv4/conf/all/arp_announce": "1"} {
		if err := k.SetSysctl(name, v); err != nil {
			t.Fatal(err)
		}
	}
	k.TakeOps()
	if _, err := prepareFake(t, k, "wrr", nil); err != nil {
		t.Fatal(err)
	}
	if got := k.Sysctl("net/ipv4/conf/all/arp_ignore"); got != "8" {
		t.Errorf("arp_ignore = %s, want the admin's 8 kept", got)
	}
	if got := k.Sysctl("net/ipv4/conf/all/arp_announce"); got != "2" {
		t.Errorf("arp_announce = %s, want 1 raised to 2", got)
	}
	for _, op := range k.TakeOps() {
		if strings.Contains(op, "arp_ignore") {
			t.Errorf("arp_ignore written: %s", op)
		}
	}
}

func TestPrepareErrors(t *testing.T) {
	k := NewFakeKernel()
	if _, err := prepareFake(t, k, "sed", errors.New("modprobe ip_vs_sed: exit status 1: FATAL: Module ip_vs_sed not found")); err == nil ||
		!strings.Contains(err.Error(), `ipvs_scheduler "sed"`) || !strings.Contains(err.Error(), "Module ip_vs_sed not found") {
		t.Errorf("modprobe failure: %v", err)
	}
	if k.Sysctl("net/ipv4/conf/all/arp_ignore") != "" {
		t.Error("sysctls set after modprobe failed")
	}

	k = NewFakeKernel()
	k.ModuleAvailable = false
	var missing *ModuleMissingError
	if _, err := prepareFake(t, k, "", nil); !errors.As(err, &missing) {
		t.Errorf("without ip_vs: %v", err)
	}

	// /proc/sys read-only: the error reaches the unit's log.
	k = NewFakeKernel()
	k.FailNext("SetSysctl", errors.New("sysctl net/ipv4/vs/conntrack=1: read-only file system"))
	if _, err := prepareFake(t, k, "", nil); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("sysctl failure: %v", err)
	}
}
