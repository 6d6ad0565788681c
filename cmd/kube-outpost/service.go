package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kardianos/service"

	"github.com/kube-outpost/kube-outpost/unitfile"
)

// serviceUsage is for hosts installed from a tarball rather than a package.
const serviceUsage = `Usage: kube-outpost service install|uninstall|start|stop|status [--config FILE]`

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
		if err = svc.Install(); err != nil {
			// kardianos creates the file before rendering it; an empty
			// unit left behind reads as "masked" and blocks a retry.
			removeIfEmpty("/etc/systemd/system/kube-outpost.service")
		}
	case "uninstall":
		// Stopping first is harmless when it is not running; the rules stay
		// either way (kube-outpost cleanup removes them).
		_ = svc.Stop()
		err = svc.Uninstall()
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
