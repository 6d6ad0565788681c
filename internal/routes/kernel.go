package routes

import (
	"fmt"
	"net/netip"
)

// Kernel is the little of rtnetlink the installer needs, all of it on the
// main routing table. The real one is NewKernel; Fake emulates the kernel's
// rules for tests of the diff.
type Kernel interface {
	// Routes lists the main table's routes of one family: ours and
	// everyone else's, since those decide what we may install.
	Routes(v6 bool) ([]KernelRoute, error)
	// Add creates a route and fails (EEXIST) if the table holds one to
	// the same destination with the same metric, whoever made it.
	Add(r KernelRoute) error
	// Replace changes the route to r.Dst with r.Metric in place, or
	// creates it: the kernel swaps the next hop without a moment
	// without a route. It matches on destination and metric only, so it
	// must be aimed at a route known to be ours.
	Replace(r KernelRoute) error
	// Delete removes the route matching r's destination, metric,
	// protocol and (when valid) gateway; the kernel checks the protocol,
	// which is what makes deleting someone else's route impossible.
	Delete(r KernelRoute) error
	// LocalPrefixes are this host's addresses, each with the prefix
	// length of its subnet (and point-to-point peers): the local and
	// directly connected networks.
	LocalPrefixes() ([]netip.Prefix, error)
}

// KernelRoute is a route as the main table has it.
type KernelRoute struct {
	Dst netip.Prefix
	// Via is the gateway; invalid for a route without exactly one
	// (a device route, a multipath route, a blackhole).
	Via       netip.Addr
	Multipath bool
	Protocol  int
	Metric    int
	// Type is the kernel's route type when it is not unicast
	// ("blackhole", "unreachable", ...): for messages only.
	Type string
}

func (r KernelRoute) String() string {
	s := r.Dst.String()
	if r.Type != "" {
		s = r.Type + " " + s
	}
	switch {
	case r.Via.IsValid():
		s += " via " + r.Via.String()
	case r.Multipath:
		s += " (multipath)"
	}
	return s + fmt.Sprintf(" proto %d metric %d", r.Protocol, r.Metric)
}

func (r KernelRoute) ours() bool { return r.Protocol == Protocol }
