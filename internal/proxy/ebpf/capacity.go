package ebpf

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// The ebpf mode's bounds (proxy.Mode.Bounds), which check-config holds
// the clusters' limits to.
const (
	// maxEndpointsPerPort: a service's head counts its slots in 16 bits
	// (struct svc_value in bpf/sock.h).
	maxEndpointsPerPort = 0xffff
	// maxEndpointEntries bounds the kernel memory the maps take at load
	// (capacities): about 200 MiB of bucket arrays at this many.
	maxEndpointEntries = 1000000
	// minEndpointEntries keeps the maps of a host with tiny limits
	// usable for a cluster added by a reload within them.
	minEndpointEntries = 1024
)

var bounds = config.Bounds{EndpointsPerPort: maxEndpointsPerPort, Endpoints: maxEndpointEntries}

// capacities are the sizes of each family's backend and service maps for
// the clusters' limits together (config.Config.EndpointEntries), so that
// no state the model admits can fill them: a write that does not fit
// would fail every sync of every cluster, and one cluster could then hold
// all the others to their last rules.
//
// The model admits at most `endpoints` endpoint entries: a service port
// times each address it is reached at times max(its endpoints, 1). A
// state holds one backend per distinct endpoint, so at most that many,
// and for each address of a port a head and a slot per endpoint, at most
// twice that many. A sync writes the new state before it deletes what is
// gone, so the maps hold two states at once: twice both.
//
// The maps allocate no entry until it is written (BPF_F_NO_PREALLOC), but
// the kernel allocates each map's bucket array at load, 16 bytes for each
// entry of capacity rounded up to a power of two: at the default
// max_endpoints of one cluster (200,000), 48 MiB for both families.
func capacities(endpoints int) (backends, slots uint32) {
	e := uint32(max(endpoints, minEndpointEntries))
	return 2 * e, 4 * e
}

// sizeMaps gives the load-balancing maps of spec their capacities.
func sizeMaps(spec *ebpf.CollectionSpec, endpoints int) {
	backends, slots := capacities(endpoints)
	for name, n := range map[string]uint32{"ko_be4": backends, "ko_be6": backends, "ko_svc4": slots, "ko_svc6": slots} {
		spec.Maps[name].MaxEntries = n
	}
}

// Resize implements proxy.Sized: a reload whose clusters' limits add up
// to more than the maps were sized for (a cluster added) makes the next
// sync load maps of the new size beside the pinned ones, copy them, fill
// them and move the hooks to them, as a restart does (migrate.go):
// nothing stops translating. Maps are never shrunk before a restart.
func (p *Proxier) Resize(cfg *config.Config) error {
	n := cfg.EndpointEntries()
	if n > maxEndpointEntries {
		return fmt.Errorf("the clusters' max_endpoints add up to %d, more than mode %q holds (%d)", n, ModeName, maxEndpointEntries)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n <= p.endpoints() {
		return nil
	}
	p.log.Info("ebpf: the maps grow for the clusters' limits at the next sync", "endpoint_entries", n, "were", p.endpoints())
	p.opt.Endpoints = n
	p.release()
	return nil
}

func (p *Proxier) endpoints() int { return max(p.opt.Endpoints, minEndpointEntries) }
