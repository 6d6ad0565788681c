package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/unitfile"
)

// The tarball install writes the packaged unit with its own paths.
func TestUnitTemplate(t *testing.T) {
	tpl := unitTemplate("/opt/ko/config.toml")
	// kardianos/service's engine knows bare keys only: {{Path}} must be the
	// one placeholder.
	if n, m := strings.Count(tpl, "{{"), strings.Count(tpl, "{{Path}}"); n != m || m == 0 {
		t.Fatalf("template has %d placeholders, %d of them {{Path}}", n, m)
	}
	unit := strings.ReplaceAll(tpl, "{{Path}}", "/opt/ko/kube-outpost")
	for _, want := range []string{
		"ExecStart=/opt/ko/kube-outpost run --config /opt/ko/config.toml",
		"ExecStartPre=/opt/ko/kube-outpost check-config --config /opt/ko/config.toml",
		"Type=notify", "WatchdogSec=", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if strings.Contains(unit, "/usr/bin/kube-outpost") || strings.Contains(unit, "/etc/kube-outpost/config.toml") {
		t.Error("unit still names the packaged paths")
	}
}

func TestServiceUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"service"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "install|uninstall") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"service", "frob"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown action "frob"`) {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

// The drop-in follows the configured mode: written for ebpf, removed
// when the host switches back to a mode the shared unit serves, with an
// admin's own drop-in beside it left alone.
func TestWriteDropIn(t *testing.T) {
	dir := t.TempDir()
	oldDir, oldInUse := dropInDir, inUse
	dropInDir = filepath.Join(dir, "kube-outpost.service.d")
	ebpfPinned := false
	inUse = func(_ context.Context, m *proxy.Mode) bool { return m.Name == "ebpf" && ebpfPinned }
	t.Cleanup(func() { dropInDir, inUse = oldDir, oldInUse })
	write(t, dir, "prod.kubeconfig", kubeconfig)
	cluster := "[[clusters]]\nname = \"prod\"\nkubeconfig = \"prod.kubeconfig\"\nservice_cidrs = [\"10.96.0.0/12\"]\n"
	ebpfCfg := write(t, dir, "ebpf.toml", "mode = \"ebpf\"\n"+cluster)
	nftCfg := write(t, dir, "nft.toml", "mode = \"nftables\"\n"+cluster)
	path := filepath.Join(dropInDir, unitfile.DropInName)

	if _, err := writeDropIn(ebpfCfg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), "CAP_BPF") || !strings.Contains(string(b), "SystemCallFilter=bpf") {
		t.Fatalf("ebpf drop-in: %q, %v", b, err)
	}
	// Switched to nftables while ebpf's hooks are still pinned: the
	// daemon needs bpf() to detach them once nftables serves.
	ebpfPinned = true
	if _, err := writeDropIn(nftCfg); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || !strings.Contains(string(b), "SystemCallFilter=bpf") {
		t.Errorf("the drop-in went while ebpf's objects are still there: %q, %v", b, err)
	}
	ebpfPinned = false
	if _, err := writeDropIn(nftCfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the ebpf drop-in stays after switching to nftables: %v", err)
	}
	if _, err := os.Stat(dropInDir); !os.IsNotExist(err) {
		t.Errorf("an empty drop-in directory stays: %v", err)
	}

	if _, err := writeDropIn(ebpfCfg); err != nil {
		t.Fatal(err)
	}
	own := write(t, dropInDir, "10-admin.conf", "[Service]\nEnvironment=X=1\n")
	if _, err := writeDropIn(nftCfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("the admin's drop-in is gone: %v", err)
	}
}
