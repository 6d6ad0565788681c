package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// ModeName is this datapath's value of the config key mode.
const ModeName config.Mode = "ebpf"

func init() {
	proxy.Register(&proxy.Mode{
		Name: ModeName,
		// A socket hook sees only this host's own sockets: there is no
		// packet of a routed client or to a node port to translate,
		// and nothing to masquerade.
		Can: config.Capabilities{config.CanExternalIPs, config.CanIPv6, config.CanReject, config.CanAffinity},
		// The maps are sized at load from the clusters' limits
		// (capacity.go), up to a bound.
		Bounds: bounds,
		// Loading programs and maps, and attaching them to a cgroup,
		// which takes only a read-only descriptor of its directory: the
		// unit's ProtectControlGroups=yes can stay. The pins are files
		// on the bpffs, so its directory must be writable. Only this
		// mode's unit drop-in grants these (unitfile.DropIn).
		Privileges: proxy.Privileges{
			Capabilities:   []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"},
			SystemCalls:    []string{"bpf"},
			ReadWritePaths: []string{"/sys/fs/bpf"},
		},
		New: newBackends,
		// One set of hooks and maps for both families.
		BothFamilies: true,
		// The bpffs the pins go on; the unit runs this outside the
		// sandbox (kube-outpost prepare).
		Prepare: func(context.Context, *config.Config) error {
			_, err := ensureBPFFS(config.DefaultBPFFS)
			return err
		},
		InUse: func(context.Context) bool { return len(pinDirs(config.DefaultBPFFS)) > 0 },
		Cleanup: func(_ context.Context, log *slog.Logger) error {
			return cleanupPins(config.DefaultBPFFS, log)
		},
		Explainer: newExplainer,
		// Never picked by mode = "auto": the hooks change what every
		// process of the namespace sees, which is for an admin to
		// choose by name (docs/ebpf.md).
		Auto: 0,
	})
}

func newBackends(env proxy.Env) ([]proxy.Backend, error) {
	mnt, err := Cgroup2Mount()
	if err != nil {
		return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	cg, err := attachCgroup(mnt, env.Config.EBPFCgroup)
	if err != nil {
		return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	// One backend for both families: the hooks and maps serve both.
	return []proxy.Backend{New(Options{Log: env.Log, Cgroup: cg, PinDir: env.Config.EBPFPinDir, Endpoints: env.Config.EndpointEntries()})}, nil
}

// attachCgroup is the configured ebpf_cgroup, or the root of the cgroup
// v2 mount mnt for none. A directory of a v1 hierarchy (a hybrid host
// has both under /sys/fs/cgroup) would take no cgroup-bpf program, with
// an error that does not say why.
func attachCgroup(mnt, configured string) (string, error) {
	if configured == "" {
		return mnt, nil
	}
	if rel, err := filepath.Rel(mnt, configured); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("ebpf_cgroup %s is not in the cgroup v2 hierarchy, which is mounted at %s", configured, mnt)
	}
	if fi, err := os.Stat(configured); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("ebpf_cgroup %s: no such cgroup (create it, or its unit, first)", configured)
	}
	return configured, nil
}

// cleanupPins detaches and unpins what every run left under the bpffs
// at root, whatever its ebpf_pin_dir was.
func cleanupPins(root string, log *slog.Logger) error {
	var errs []error
	for _, dir := range pinDirs(root) {
		log.Info("removing the ebpf mode's hooks and maps", "dir", dir)
		errs = append(errs, removePinned(dir))
	}
	return errors.Join(errs...)
}

// pinDirs are the children of the bpffs at root that hold this mode's
// pins: any ebpf_pin_dir a run used (config keeps it a child of the
// bpffs), found without the config, for cleanup and for a mode switch.
func pinDirs(root string) []string {
	entries, _ := os.ReadDir(root)
	var dirs []string
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		// ko_config is ours by name, where "link_" could be another
		// tool's: a directory without it is left alone, whatever else
		// it holds.
		if _, err := os.Stat(filepath.Join(dir, "ko_config")); e.IsDir() && err == nil {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}
