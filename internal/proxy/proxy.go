// Package proxy defines what every datapath mode is to the rest of the
// program: a Backend that makes the kernel match a desired state, and a
// Mode that describes the datapath (how it is made, prepared, cleaned up,
// explained, what it can do and what privileges it needs). Each mode's
// package registers its Mode; internal/proxy/modes links them all in.
package proxy

import (
	"context"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Backend programs one kind of kernel datapath. It owns only its own
// objects and never reads the apiserver.
type Backend interface {
	// Sync makes the kernel match st. full rewrites every object the backend
	// owns instead of only what changed since the last successful Sync. On
	// error the previous rules stay in force and the next Sync is full.
	Sync(ctx context.Context, st *model.State, full bool) error
	// Cleanup removes every object the backend ever programmed, and nothing
	// else.
	Cleanup(ctx context.Context) error
}

// TransactionFailure is an error of a kernel transaction that was refused
// as a whole (an iptables-restore, an nft -f, a batch of map updates), so
// the previous state stayed in force. Metrics count these apart from other
// sync errors: they point at our rules, not at the host.
type TransactionFailure interface {
	error
	TransactionFailed()
}

// Warner is a Backend that knows of something wrong on the host that a
// sync cannot fix (a sysctl reset behind its back); status shows it.
type Warner interface {
	Warnings() []string
}

// ConnectionCounter is a Backend that counts each service port's new
// connections in the kernel (nftables mode's named counters), for
// service_metrics. It runs beside Sync.
type ConnectionCounter interface {
	// ConnectionCounts are the counts of the ports the last sync
	// programmed.
	ConnectionCounts(ctx context.Context) (map[model.PortKey]uint64, error)
}

// Prober is a Backend that can tell cheaply, every few seconds, whether
// its objects were removed behind its back (a firewall reload flushing a
// table), so that they are repaired by a full sync at once rather than at
// the next periodic one. It runs beside Sync.
type Prober interface {
	// Missing says what is gone; nothing when all is there, or before
	// the first sync.
	Missing(ctx context.Context) ([]string, error)
}

// Inspector is a Backend whose kernel objects status lists: programs
// attached to hooks and the fill of maps (ebpf mode), which no rule
// listing shows. It runs beside Sync.
type Inspector interface {
	// Datapath is what the kernel holds now; zero before the first
	// sync.
	Datapath(ctx context.Context) (Datapath, error)
}

// Datapath is the kernel objects of an Inspector.
type Datapath struct {
	Programs []AttachedProgram `json:"programs,omitempty"`
	Maps     []MapFill         `json:"maps,omitempty"`
}

// AttachedProgram is a program on a hook.
type AttachedProgram struct {
	Hook string `json:"hook"`
	// ID is the kernel's program ID, as bpftool prog show lists it.
	ID     uint32 `json:"id"`
	Target string `json:"target"`
}

// MapFill is how full a map is: a hash map that is full refuses new
// entries, and a sync then fails.
type MapFill struct {
	Name     string `json:"name"`
	Entries  int    `json:"entries"`
	Capacity int    `json:"capacity"`
}

// MissCounter is a Backend that counts, in the kernel, translations that
// found a service and no backend (ebpf mode's refusals), for metrics.
type MissCounter interface {
	NoBackend(ctx context.Context) (uint64, error)
}

// Sized is a Backend whose kernel objects are sized from the clusters'
// limits (ebpf mode's maps). A reload hands it the new configuration
// before any of its clusters starts: the backend grows its objects for
// them (by its next sync, serving from the old ones until then), or says
// why it cannot, and the reload is then refused whole.
type Sized interface {
	Resize(cfg *config.Config) error
}
