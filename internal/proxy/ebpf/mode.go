package ebpf

import (
	"context"
	"log/slog"

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
		New:        newBackends,
		InUse:      func(context.Context) bool { return pinned(DefaultPinDir) },
		Cleanup: func(_ context.Context, log *slog.Logger) error {
			if !pinned(DefaultPinDir) {
				return nil
			}
			log.Info("removing the ebpf mode's hooks and maps", "dir", DefaultPinDir)
			return removePinned(DefaultPinDir)
		},
		Explainer: newExplainer,
		// Never picked by mode = "auto" until it is complete.
		Auto: 0,
	})
}

func newBackends(env proxy.Env) ([]proxy.Backend, error) {
	if _, err := Cgroup2Mount(); err != nil {
		return nil, &proxy.NotSupportedError{Mode: ModeName, Err: err}
	}
	// One backend for both families: the hooks and maps serve both.
	return []proxy.Backend{New(Options{Log: env.Log})}, nil
}
