package main

import (
	"bytes"
	"strings"
	"testing"
	"text/template"
)

// The tarball install writes the packaged unit with its own paths.
func TestUnitTemplate(t *testing.T) {
	tpl, err := template.New("unit").Parse(unitTemplate("/opt/ko/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, map[string]any{"Path": "/opt/ko/kube-outpost"}); err != nil {
		t.Fatal(err)
	}
	unit := b.String()
	for _, want := range []string{
		"ExecStart=/opt/ko/kube-outpost run --config /opt/ko/config.toml",
		"ExecStartPre=/opt/ko/kube-outpost check-config --config /opt/ko/config.toml",
		"Type=notify", "WatchdogSec=", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
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
