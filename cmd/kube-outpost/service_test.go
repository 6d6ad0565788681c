package main

import (
	"bytes"
	"strings"
	"testing"
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
