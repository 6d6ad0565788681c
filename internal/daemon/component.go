package daemon

import (
	"context"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// component is an optional part of the daemon: the routes of reach =
// "routes" are one (routes.go); a DNS server or an eBPF datapath would be
// another, one more entry in the Daemon's components rather than more
// fields. It gets what it needs when New makes it: the cluster set, the
// store, or a place in the watchers' cluster.Fanout for their objects.
//
// There is no Reload: settings outside [[clusters]] need a restart, and
// the clusters reach a component through the cluster set, the store and
// the sync. There is no Health either: a component that fails makes its
// sync fail, and the health checks follow the syncs.
type component interface {
	// Start begins what the component does besides syncing, until ctx is
	// done; Run calls it once the clusters are watched, before the first
	// sync. An error, which names the component, stops the daemon's
	// start.
	Start(ctx context.Context) error
	// Sync makes what the component programs match st. It runs in the
	// sync loop after the backends, one sync at a time; an error fails
	// the sync, which is retried, but not the other components' syncs.
	Sync(ctx context.Context, st *model.State) error
	// Stop returns once what Start began has ended. What Sync programmed
	// stays, as the rules do: a restart must not cut traffic.
	Stop()
}

// startComponents starts every component, or none: one that fails stops
// those started before it.
func (d *Daemon) startComponents(ctx context.Context) error {
	for i, c := range d.components {
		if err := c.Start(ctx); err != nil {
			for _, started := range d.components[:i] {
				started.Stop()
			}
			return err
		}
	}
	return nil
}

func (d *Daemon) stopComponents() {
	for _, c := range d.components {
		c.Stop()
	}
}
