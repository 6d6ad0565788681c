package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kardianos/service"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/unitfile"
)

// dropInDir is unitfile.DropInDir, and inUse a mode's InUse; tests
// replace them.
var (
	dropInDir = unitfile.DropInDir
	inUse     = func(ctx context.Context, m *proxy.Mode) bool { return m.InUse(ctx) }
)

// writeDropIn makes the unit's drop-in what the configured mode needs:
// written for a mode that needs more than the shared unit grants (ebpf),
// removed for any other, so that switching away from ebpf also takes its
// privileges away. mode = "auto" never picks a mode that needs one.
func writeDropIn(cfgPath string) (string, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dropInDir, unitfile.DropInName)
	var modes []*proxy.Mode
	if m := proxy.Lookup(cfg.Mode); m != nil {
		modes = append(modes, m)
	}
	// A mode switched away from keeps its grant until the daemon has
	// removed its objects: without bpf() it could not detach ebpf's hooks.
	for _, m := range proxy.Modes() {
		if m.Name != cfg.Mode && inUse(context.Background(), m) {
			modes = append(modes, m)
		}
	}
	text := unitfile.DropIn(modes...)
	if text == "" {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return "", err
		}
		// The directory may hold the admin's own drop-ins: only an
		// empty one goes.
		_ = os.Remove(dropInDir)
		return fmt.Sprintf("mode %s needs no drop-in", cfg.Mode), nil
	}
	if err := os.MkdirAll(dropInDir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", err
	}
	return fmt.Sprintf("mode %s: wrote %s", cfg.Mode, path), nil
}

// serviceUsage is for hosts installed from a tarball rather than a package.
const serviceUsage = `Usage: kube-outpost service install|uninstall|start|stop|status|drop-in [--config FILE]`

// noProgram: these commands only control the service; systemd runs it.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }

// unitTemplate is the packaged unit with this binary and config in place of
// the packaged paths, as a kardianos/service template (its own small
// engine: keys are bare names, {{Path}}, not text/template's {{.Path}}).
func unitTemplate(cfgPath string) string {
	u := strings.ReplaceAll(unitfile.Unit, "/etc/kube-outpost/config.toml", cfgPath)
	return strings.ReplaceAll(u, "/usr/bin/kube-outpost", "{{Path}}")
}

func serviceCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, serviceUsage)
		return 2
	}
	action, rest := args[0], args[1:]
	cfgPath := defaultConfig
	for i := 0; i < len(rest); i++ {
		switch {
		case rest[i] == "--config" && i+1 < len(rest):
			cfgPath = rest[i+1]
			i++
		case strings.HasPrefix(rest[i], "--config="):
			cfgPath = strings.TrimPrefix(rest[i], "--config=")
		default:
			fmt.Fprintf(stderr, "service: unexpected argument %q\n%s\n", rest[i], serviceUsage)
			return 2
		}
	}
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	svc, err := service.New(noProgram{}, &service.Config{
		Name:        "kube-outpost",
		DisplayName: "kube-outpost",
		Description: "kube-outpost: reach Kubernetes ClusterIPs from this machine",
		Option:      service.KeyValue{"SystemdScript": unitTemplate(abs)},
	})
	if err != nil {
		fmt.Fprintln(stderr, "service:", err)
		return 1
	}
	switch action {
	case "install":
		// The drop-in first, so that the daemon-reload of Install reads
		// it too. A config not written yet is no reason to refuse the
		// unit: the drop-in can follow (service drop-in).
		if msg, derr := writeDropIn(abs); derr != nil {
			fmt.Fprintf(stderr, "service install: no unit drop-in for the mode (%v); once the config is right: kube-outpost service drop-in\n", derr)
		} else {
			fmt.Fprintln(stdout, msg)
		}
		if err = svc.Install(); err != nil {
			// kardianos creates the file before rendering it; an empty
			// unit left behind reads as "masked" and blocks a retry.
			removeIfEmpty("/etc/systemd/system/kube-outpost.service")
		}
	case "drop-in":
		// For a packaged unit, after changing mode: the packages ship
		// the shared unit only.
		var msg string
		if msg, err = writeDropIn(abs); err == nil {
			fmt.Fprintf(stdout, "%s\nthen: systemctl daemon-reload && systemctl restart kube-outpost\n", msg)
			return 0
		}
	case "uninstall":
		// Stopping first is harmless when it is not running; the rules stay
		// either way (kube-outpost cleanup removes them).
		_ = svc.Stop()
		if err = svc.Uninstall(); err == nil {
			_ = os.Remove(filepath.Join(dropInDir, unitfile.DropInName))
			_ = os.Remove(dropInDir)
		}
	case "start":
		err = svc.Start()
	case "stop":
		err = svc.Stop()
	case "status":
		var st service.Status
		st, err = svc.Status()
		if err == nil {
			fmt.Fprintln(stdout, map[service.Status]string{
				service.StatusRunning: "running", service.StatusStopped: "stopped",
			}[st])
			if st != service.StatusRunning {
				return 3 // like systemctl status: not running
			}
			return 0
		}
	default:
		fmt.Fprintf(stderr, "service: unknown action %q\n%s\n", action, serviceUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "service %s: %v\n", action, err)
		return 1
	}
	fmt.Fprintf(stdout, "service %s: done (%s)\n", action, svc.Platform())
	return 0
}

func removeIfEmpty(path string) {
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		os.Remove(path)
	}
}
