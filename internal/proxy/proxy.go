// Package proxy defines what every kernel backend does: make the kernel match
// a desired state, and remove everything it ever programmed.
package proxy

import (
	"context"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Backend programs one kind of kernel datapath: iptables or IPVS today.
// It owns only its own objects and never reads the apiserver.
type Backend interface {
	// Sync makes the kernel match st. full rewrites every object the backend
	// owns instead of only what changed since the last successful Sync. On
	// error the previous rules stay in force and the next Sync is full.
	Sync(ctx context.Context, st *model.State, full bool) error
	// Cleanup removes every object the backend ever programmed, and nothing
	// else.
	Cleanup(ctx context.Context) error
}
