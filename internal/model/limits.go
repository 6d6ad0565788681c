package model

import (
	"cmp"
	"fmt"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Limits bound what one cluster can make this host compute, hold and
// program: whoever writes a cluster's Services and EndpointSlices decides
// how many there are, and without a bound one cluster's size would stall
// the store every cluster shares, slow every sync and grow the daemon
// until the host runs short of memory. A zero field stands for its
// default.
type Limits struct {
	// MaxServices is how many services of the cluster are programmed
	// or named: those with a ClusterIP that would be proxied, and the
	// headless and ExternalName ones whose names the DNS server answers
	// (named.go), which are held and built the same way.
	MaxServices int
	// MaxEndpointsPerPort is how many endpoints one service port is
	// programmed with: the first ones in address order.
	MaxEndpointsPerPort int
	// MaxEndpoints bounds the cluster's endpoint entries: the sum over
	// its programmed services of their ports times the endpoints their
	// EndpointSlices list (at least one per port; a named service counts
	// as one port, its endpoints being read once), times the addresses
	// each port is reached at where external IPs are allowed. That is what the
	// model reads to build a service, so it bounds the work of one event
	// and of a rebuild, not only the rules.
	MaxEndpoints int
	// ExternalIPs says that the cluster may have external IPs
	// (allow_external_ips): a service's endpoint entries then count
	// each address it names (costOf).
	ExternalIPs bool
}

func (l Limits) services() int { return cmp.Or(l.MaxServices, config.DefaultMaxServices) }
func (l Limits) perPort() int {
	return cmp.Or(l.MaxEndpointsPerPort, config.DefaultMaxEndpointsPerPort)
}
func (l Limits) endpointBudget() int { return cmp.Or(l.MaxEndpoints, config.DefaultMaxEndpoints) }

// The problems the limits report start with these. Their texts name no
// number that changes with the objects, so that a service that stays over
// a limit while its endpoints flap warns once, not at every flap.
const (
	overServicesPrefix  = "over max_services: "
	overEndpointsPrefix = "over max_endpoints: "
	overPerPortPrefix   = "over max_endpoints_per_port: "
)

// The refusal reasons of the limits, for metrics.
const (
	// ReasonMaxServices: a service beyond the cluster's max_services.
	ReasonMaxServices RefusalReason = "limit_services"
	// ReasonMaxEndpoints: a service that would take the cluster past its
	// max_endpoints.
	ReasonMaxEndpoints RefusalReason = "limit_endpoints"
	// ReasonMaxEndpointsPerPort: a service port with more usable
	// endpoints than max_endpoints_per_port; the first ones are
	// programmed.
	ReasonMaxEndpointsPerPort RefusalReason = "limit_endpoints_per_port"
)

// ExcludedOverLimit: usable, but beyond the first max_endpoints_per_port
// endpoints of the port in address order.
const ExcludedOverLimit Exclusion = "over-limit"

// capEndpoints keeps the first max_endpoints_per_port endpoints of a
// port's selection, which are sorted by address, and excludes the rest.
// Address order depends on nothing but the endpoints, so the same ones
// stay whatever order the slices changed in, and a flapping endpoint
// beyond the cap changes no rule.
func capEndpoints(cfg ClusterConfig, field string, sel selection) selection {
	n := cfg.limits().perPort()
	if len(sel.endpoints) <= n {
		return sel
	}
	detail := fmt.Sprintf("usable, but beyond the first %d in address order (the cluster's max_endpoints_per_port)", n)
	excluded := make([]ExcludedEndpoint, len(sel.excluded), len(sel.excluded)+len(sel.endpoints)-n)
	copy(excluded, sel.excluded)
	for _, e := range sel.endpoints[n:] {
		excluded = append(excluded, ExcludedEndpoint{Address: e.Addr.Addr().String(), Port: e.Addr.Port(), Reason: ExcludedOverLimit, Detail: detail})
	}
	sel.excluded = sortExcluded(excluded)
	sel.endpoints = slices.Clip(sel.endpoints[:n])
	sel.problems = append(sel.problems, problemf(ReasonMaxEndpointsPerPort, "%s: %smore than %d usable endpoints: the first %d in address order are programmed", field, overPerPortPrefix, n, n))
	return sel
}

// admission decides which of a cluster's services are programmed under
// max_services and max_endpoints. Services are taken oldest first (by
// creationTimestamp, then namespace and name), each while both limits
// leave room for it; one that does not fit is refused, and younger ones
// still get the room left. So a service's fate depends only on itself and
// the services older than it: a flood of new Services or endpoints cannot
// push out a service that was there before it, the order is the same
// whatever order the events come in or after a restart, and a newcomer
// refused now is taken as soon as room is made. The timestamp is the
// apiserver's, which could lie, but it orders only this cluster's own
// services: across clusters nothing is shared.
//
// Refusing by name instead would let anyone who can create a Service in
// a namespace that sorts first push out the services of every other
// namespace; refusing whichever came last would depend on event order,
// and after a restart on the order of the first list.
type admission struct {
	lim     Limits
	entries []*admEntry // sorted by admEntry.compare
	byName  map[types.NamespacedName]*admEntry
	// slices are the slice and endpoint counts of each service's
	// EndpointSlices, kept as they change, so that the cost of a service
	// is known without reading its slices.
	slices map[types.NamespacedName]sliceCount
	// cost is the sum of the entries' costs. While the entries fit both
	// limits all together, all are admitted and no walk is needed: the
	// walks' states are kept only while bound is set.
	cost  int
	bound bool
}

type sliceCount struct{ slices, endpoints int }

type admEntry struct {
	nn      types.NamespacedName
	created time.Time
	cost    int
	why     Problem // the refusal, the zero Problem when admitted
	// count and sum are the services admitted before this one and their
	// cost, as the last walk found them: a walk that finds them again
	// stops there, since nothing after can change.
	count, sum int
}

func (e *admEntry) compare(o *admEntry) int {
	return cmp.Or(e.created.Compare(o.created), strings.Compare(e.nn.Namespace, o.nn.Namespace), strings.Compare(e.nn.Name, o.nn.Name))
}

// refusal is why nn is not programmed, the zero Problem when it may be.
func (a *admission) refusal(nn types.NamespacedName) Problem {
	if e := a.byName[nn]; e != nil {
		return e.why
	}
	return Problem{}
}

// costOf is a service's endpoint entries: its ports (as many as are
// programmed) times the endpoints its slices list, at least one per port,
// times the addresses each port is reached at when the cluster may have
// external IPs (its ClusterIP and every external or load-balancer IP the
// service names, taken or not), and one for each slice (empty ones are
// read too). It is what building the service reads, counted without
// reading it, and a bound on what a datapath holds for it: a translation
// per address, port and endpoint in ebpf mode.
func (a *admission) costOf(nn types.NamespacedName, svc *corev1.Service) int {
	c := a.slices[nn]
	ports := min(len(svc.Spec.Ports), maxServicePorts)
	addrs := 1
	if named(svc) {
		ports = 1
	} else if a.lim.ExternalIPs {
		addrs += externalCount(svc)
	}
	return ports*max(c.endpoints, 1)*addrs + c.slices
}

// externalCount is how many external and load-balancer IPs svc names,
// capped so that the cost cannot overflow: far past the cap, the service
// is refused all the same.
func externalCount(svc *corev1.Service) int {
	n := len(svc.Spec.ExternalIPs)
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			n++
		}
	}
	return min(n, maxCountedExternalIPs)
}

// maxCountedExternalIPs caps externalCount: more than every limit allows.
const maxCountedExternalIPs = 1 << 20

// limited says whether a service counts against the limits: every one the
// model builds something from.
func limited(svc *corev1.Service) bool { return proxied(svc) || named(svc) }

// sliceChanged records that a slice of service nn changed from old to es;
// nil stands for none, on either side.
func (a *admission) sliceChanged(nn types.NamespacedName, old, es *discoveryv1.EndpointSlice) {
	if a.slices == nil {
		a.slices = map[types.NamespacedName]sliceCount{}
	}
	c := a.slices[nn]
	if old != nil {
		c.slices, c.endpoints = c.slices-1, c.endpoints-len(old.Endpoints)
	}
	if es != nil {
		c.slices, c.endpoints = c.slices+1, c.endpoints+len(es.Endpoints)
	}
	if c.slices == 0 {
		delete(a.slices, nn)
		return
	}
	a.slices[nn] = c
}

// reset recomputes the admission of every service from scratch.
func (a *admission) reset(lim Limits, svcs map[types.NamespacedName]*corev1.Service, sl map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice) {
	a.lim = lim
	a.entries = a.entries[:0]
	a.byName = make(map[types.NamespacedName]*admEntry, len(svcs))
	a.slices = make(map[types.NamespacedName]sliceCount, len(sl))
	for nn, m := range sl {
		for _, es := range m {
			a.sliceChanged(nn, nil, es)
		}
	}
	a.cost, a.bound = 0, false
	for nn, svc := range svcs {
		if !limited(svc) {
			continue
		}
		e := &admEntry{nn: nn, created: svc.CreationTimestamp.Time, cost: a.costOf(nn, svc)}
		a.entries = append(a.entries, e)
		a.byName[nn] = e
		a.cost += e.cost
	}
	slices.SortFunc(a.entries, (*admEntry).compare)
	a.settle(0, true)
}

// update records the service nn as it is now (nil when deleted), and
// returns the other services whose admission changed: they
// must be built again. The cost is one binary search, and a walk from the
// service's place that stops where the services after it are decided as
// before: for a newcomer to a full cluster, one step.
func (a *admission) update(nn types.NamespacedName, svc *corev1.Service) []types.NamespacedName {
	if a.byName == nil {
		a.byName = map[types.NamespacedName]*admEntry{}
	}
	old := a.byName[nn]
	if svc == nil || !limited(svc) {
		if old == nil {
			return nil
		}
		i := a.index(old)
		a.entries = slices.Delete(a.entries, i, i+1)
		delete(a.byName, nn)
		a.cost -= old.cost
		return a.settle(i, false)
	}
	e := &admEntry{nn: nn, created: svc.CreationTimestamp.Time, cost: a.costOf(nn, svc)}
	if old != nil {
		if old.created.Equal(e.created) {
			if old.cost == e.cost {
				return nil
			}
			a.cost += e.cost - old.cost
			old.cost = e.cost
			return a.settle(a.index(old), true)
		}
		// Deleted and created again under the same name, between two
		// events: it moves to its new place.
		i := a.index(old)
		a.entries = slices.Delete(a.entries, i, i+1)
		a.cost += e.cost - old.cost
		j := a.insert(e)
		if a.bound {
			a.invalidate(min(i, j))
		}
		return a.settle(min(i, j), true)
	}
	a.cost += e.cost
	return a.settle(a.insert(e), true)
}

// settle decides the entries after a change at index i (see walk): when
// everything fits, nothing is walked; when the limits start to bind, all
// is walked once, and from then on only from i.
func (a *admission) settle(i int, changed bool) []types.NamespacedName {
	fits := len(a.entries) <= a.lim.services() && a.cost <= a.lim.endpointBudget()
	switch {
	case fits:
		a.bound = false
		var flipped []types.NamespacedName
		for _, e := range a.entries {
			if e.why != (Problem{}) {
				e.why = Problem{}
				flipped = append(flipped, e.nn)
			}
		}
		return flipped
	case !a.bound:
		a.bound = true
		a.invalidate(0)
		return a.walk(0, true)
	}
	return a.walk(i, changed)
}

// invalidate forgets the walks' states from i on, so that the next walk
// goes to the end: after two changes (an entry left one place and arrived
// at another), or while the states were not kept.
func (a *admission) invalidate(i int) {
	for _, e := range a.entries[i:] {
		e.count, e.sum = -1, -1 // never found again
	}
}

func (a *admission) insert(e *admEntry) int {
	e.count, e.sum = -1, -1 // not walked yet
	i, _ := slices.BinarySearchFunc(a.entries, e, (*admEntry).compare)
	a.entries = slices.Insert(a.entries, i, e)
	a.byName[e.nn] = e
	return i
}

func (a *admission) index(e *admEntry) int {
	i, found := slices.BinarySearchFunc(a.entries, e, (*admEntry).compare)
	if !found || a.entries[i] != e {
		panic("model: admission entry out of place") // a broken invariant, not input
	}
	return i
}

// walk decides the entries from i on, and returns those whose decision
// changed. changed says that entry i itself is new or changed: it is then
// decided even when the state before it is as before.
//
// Once max_services are admitted, every later entry is refused whatever
// the sum: the state is then kept as (max_services, 0), so that a walk
// stops at the first entry that was past that point before as well, and a
// change among the older services walks at most to there.
func (a *admission) walk(i int, changed bool) []types.NamespacedName {
	maxSvcs, budget := a.lim.services(), a.lim.endpointBudget()
	count, sum := 0, 0
	if i > 0 {
		p := a.entries[i-1]
		count, sum = p.count, p.sum
		if p.why == (Problem{}) {
			count, sum = count+1, sum+p.cost
		}
	}
	if count >= maxSvcs {
		count, sum = maxSvcs, 0
	}
	var flipped []types.NamespacedName
	for j := i; j < len(a.entries); j++ {
		e := a.entries[j]
		if (j > i || !changed) && e.count == count && e.sum == sum {
			break
		}
		e.count, e.sum = count, sum
		var why Problem
		switch {
		case count >= maxSvcs:
			why = problemf(ReasonMaxServices, "%sthe cluster has more than %d services to program: the oldest are (by creation time, then namespace and name), this one is refused", overServicesPrefix, maxSvcs)
		case sum+e.cost > budget:
			why = problemf(ReasonMaxEndpoints, "%sits ports times the endpoints of its EndpointSlices would take the cluster past %d endpoint entries, "+
				"after the services older than it: refused", overEndpointsPrefix, budget)
		default:
			count, sum = count+1, sum+e.cost
			if count >= maxSvcs {
				count, sum = maxSvcs, 0
			}
		}
		if why != e.why {
			e.why = why
			flipped = append(flipped, e.nn)
		}
	}
	return flipped
}
