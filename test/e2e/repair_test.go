//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
)

// TestRepairAfterFlush: what a firewall reload does to our rules (a flushed
// nat table; every table flushed and its chains deleted, as firewalld's
// reload of the iptables backend does; `nft flush ruleset`; a VIP taken off
// its interface; a hook of ebpf mode detached) is found by the daemon's probe and repaired by a full
// sync: the service answers again within 5 s, each repair is counted once
// in kube_outpost_sync_proxy_rules_repairs_total and logged in one line.
func TestRepairAfterFlush(t *testing.T) {
	alpha := theLab.Cluster("alpha").Admin
	ns := namespace(t, alpha, "repair")
	vip := service(t, alpha, ns, "web", web)
	slice(t, alpha, ns, "web", "1", web, []ep{readyEP(ip("a1"))})
	ctx := context.Background()
	// What the flushes take besides our rules (the foreign rules the
	// cleanup test checks, the lab's own) is put back at the end.
	saved := map[string]string{}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		if out, err := theLab.HostRun(ctx, cmd); err == nil { // no IPv6 here: nothing to keep
			saved[cmd] = out
		}
	}
	t.Cleanup(func() {
		for cmd, rules := range saved {
			restore := theLab.HostCommand(ctx, strings.TrimSuffix(cmd, "-save")+"-restore")
			restore.Stdin = strings.NewReader(rules)
			if out, err := restore.CombinedOutput(); err != nil {
				t.Errorf("%s: %v\n%s", restore, err, out)
			}
		}
	})
	o := startObserved(t)
	answeredBy(t, url(vip, 80), 3, "a1")
	run := func(args ...string) {
		t.Helper()
		if out, err := theLab.HostRun(ctx, args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	const repairs = "kube_outpost_sync_proxy_rules_repairs_total"
	const logged = "removed behind our back"
	for _, tc := range []struct {
		name string
		skip func() string // why it cannot run here; "" when it can
		do   func()
	}{
		{"iptables -t nat -F", iptablesOnly, func() { run("iptables", "-t", "nat", "-F") }},
		{"every table flushed and its chains deleted", iptablesOnly, func() {
			for _, table := range []string{"nat", "filter"} {
				run("iptables", "-t", table, "-F")
				run("iptables", "-t", table, "-X")
			}
		}},
		{"nft flush ruleset", nftOnly, func() { run("nft", "flush", "ruleset") }},
		{"a VIP taken off its interface", func() string {
			if out, err := theLab.HostRun(ctx, "ip", "-o", "addr", "show", "dev", "outpost0"); err != nil || !mentions(out, vip) {
				return "this mode binds no VIP to an interface"
			}
			return ""
		}, func() { run("ip", "addr", "del", vip.String()+"/"+fmt.Sprint(vip.BitLen()), "dev", "outpost0") }},
		// What `bpftool link detach` does to a hook of ebpf mode.
		{"a hook detached", func() string {
			if _, err := os.Stat(connect4Pin()); err != nil {
				return "this mode pins no connect4 hook"
			}
			return ""
		}, func() {
			l, err := link.LoadPinnedLink(connect4Pin(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := l.Detach(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != nil {
				if why := tc.skip(); why != "" {
					t.Skip(why)
				}
			}
			answeredBy(t, url(vip, 80), 1, "a1")
			s, err := o.scrape()
			if err != nil {
				t.Fatal(err)
			}
			before, logs := s.value(repairs, ""), o.count(logged)
			tc.do()
			flushed := time.Now()
			eventually(t, 5*time.Second, "the service answering again", func() error {
				body, err := get(url(vip, 80))
				if err == nil && body != "a1" {
					return fmt.Errorf("answered by %q", body)
				}
				return err
			})
			t.Logf("%s: answering again %v after", tc.name, time.Since(flushed).Round(10*time.Millisecond))
			eventually(t, 5*time.Second, "the repair counted", func() error {
				s, err := o.scrape()
				if err != nil {
					return err
				}
				if got := s.value(repairs, ""); got != before+1 {
					return fmt.Errorf("%s = %v, want %v", repairs, got, before+1)
				}
				return nil
			})
			if n := o.count(logged) - logs; n != 1 {
				t.Errorf("%d log lines about the repair, want 1:\n%s", n, o.log.String())
			}
		})
	}
}

// connect4Pin is where ebpf mode pins its connect4 hook's link in the
// lab's bpffs.
func connect4Pin() string {
	if theLab.BPFFS == "" {
		return ""
	}
	return filepath.Join(pinDirOf(theLab), "link_connect4")
}

// nftOnly skips `nft flush ruleset` where the mode wrote nothing that nft
// lists: neither a table of its own nor iptables rules of iptables-nft
// (ebpf mode's maps and hooks are no part of the ruleset).
func nftOnly() string {
	if _, err := exec.LookPath("nft"); err != nil {
		return "no nft here"
	}
	out, err := theLab.HostRun(context.Background(), "nft", "list", "ruleset")
	if err != nil || !strings.Contains(out, "kube-outpost") && !strings.Contains(out, "OUTPOST-") {
		return "this mode has nothing in the ruleset for the flush to take"
	}
	return ""
}

// iptablesOnly skips a flush of iptables' tables where the mode wrote no
// iptables rules: what the kernel holds decides, not the mode's name.
func iptablesOnly() string {
	out, err := theLab.HostRun(context.Background(), "iptables-save", "-t", "nat")
	if err != nil || !strings.Contains(out, ":OUTPOST-") {
		return "this mode has no iptables rules for the flush to take"
	}
	return ""
}
