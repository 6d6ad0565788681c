// Package routes installs the host routes of reach = "routes": each node's
// pod CIDRs via that node, so that this host reaches pod IPs without a
// router that knows them. It owns exactly the routes it creates, recognised
// by their protocol number, and never changes or removes any other.
//
// Why the main table and not a table of our own behind an ip rule: the
// kernel picks the longest prefix only within one table, and tables are
// consulted in rule order. A rule in front of main would let our /24 win
// over a more specific route someone else put in main (a VPN's /32, a
// host route to one pod); a rule after main would never be reached on a
// host with a default route, which is every host. In main, every other
// route more specific than ours still wins, as it should, and `ip route`
// shows ours where an operator looks first.
package routes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Protocol marks our routes (`ip route show proto 95`). It is not in the
// kernel's rtnetlink.h nor in iproute2's rt_protos (0-18, 42 babel, 99
// openr, 186-192), nor used by FRR (186-198), kube-router (17), Calico
// (3 for felix, 80 for its BIRD routes) or Cilium (2). 79 was the first
// candidate; a public project marks its ip rules with it, so 95.
const Protocol = 95

// Metric of our routes. Above the kernel's defaults (0 for IPv4, 1024 for
// IPv6) so that a route an administrator adds by hand to the same
// destination wins at once; the next Sync then sees it and withdraws ours.
const Metric = 2048

// Route is one desired route: Dst via the node address Via.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
	// Owner names who wants the route, for messages and for deciding
	// conflicts: "node n1 of cluster \"delta\"". Owners that want one
	// destination via one gateway share one kernel route.
	Owner string
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// Compare orders routes by destination, then gateway, then owner.
func (r Route) Compare(o Route) int {
	return cmp.Or(r.Dst.Addr().Compare(o.Dst.Addr()), cmp.Compare(r.Dst.Bits(), o.Dst.Bits()), r.Via.Compare(o.Via),
		strings.Compare(r.Owner, o.Owner))
}

// Refusal is a desired route that is not installed, and why.
type Refusal struct {
	Route  Route
	Reason string
}

func (r Refusal) String() string {
	s := r.Route.String() + ": " + r.Reason
	if r.Route.Owner != "" {
		s = r.Route.Owner + ": " + s
	}
	return s
}

// Protected is an address that no route may cover, whoever asks: the
// host's own way to its gateway, its resolvers and the apiservers it
// watches. What says which it is, for the refusal.
type Protected struct {
	Addr netip.Addr
	What string
}

// Options configures New.
type Options struct {
	// Kernel is the routing table to program; NewKernel(nil) is this
	// process's network namespace.
	Kernel Kernel
	// Log gets a warning per refused route, once per change of the
	// reason, and an info line per route added, changed or removed; nil
	// discards.
	Log *slog.Logger
}

// Installer makes the kernel's routes of protocol Protocol in the main
// table equal to a desired set. Safe for concurrent use; calls are
// serialised.
type Installer struct {
	k   Kernel
	log *slog.Logger

	mu      sync.Mutex
	refused []Refusal
	// holders are the owners whose route to a destination was in the
	// kernel after the last Sync: they keep it against a newcomer even
	// when their gateway moves.
	holders map[netip.Prefix][]string
}

// New returns an installer. It touches nothing before Sync or Cleanup.
func New(opts Options) *Installer {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Installer{k: opts.Kernel, log: log}
}

// Refused returns the desired routes of the last Sync that were not
// installed, sorted, with the reason: for status.
func (in *Installer) Refused() []Refusal {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.refused)
}

// Sync makes our routes equal to desired, less the refused ones. Routes that
// are already right are left alone (no delete and re-add: connections keep
// flowing); a changed gateway is replaced in place. A route is refused when
// its destination overlaps one of this host's own addresses or directly
// connected networks (or loopback, link-local, multicast), when it covers a
// protected address, when another route to exactly the same destination
// exists that is not ours (it is left alone, and it decides), or when the
// gateway is this host or is not on a directly connected network (the
// kernel would refuse it).
//
// When desired routes disagree about the gateway of one destination, one
// of them is installed and the others refused: the newcomer never takes a
// destination from the route that has it. The winner is, in this order, an
// owner whose route the last Sync installed, the gateway of our route in
// the kernel (after a restart), and else the first in desired: callers
// list routes in the order that should decide.
//
// A refusal is not an error: nothing retried would change it. The error
// reports what failed in the kernel; every other route is still synced,
// and the next Sync tries again.
func (in *Installer) Sync(ctx context.Context, desired []Route, protected []Protected) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	local, err := in.k.LocalPrefixes()
	if err != nil {
		return fmt.Errorf("routes: listing this host's addresses: %w", err)
	}
	candidates, refused := validate(desired, local, protected)
	var errs []error
	current := map[bool][]KernelRoute{}
	listed := map[bool]bool{}
	for _, v6 := range []bool{false, true} {
		rs, err := in.k.Routes(v6)
		if err != nil {
			if !errors.Is(err, syscall.EAFNOSUPPORT) || hasFamily(candidates, v6) {
				errs = append(errs, fmt.Errorf("routes: listing the %s routes: %w", family(v6), err))
			}
			continue // a kernel without IPv6, and nothing to do for it
		}
		current[v6], listed[v6] = rs, true
	}
	want, lost := in.decide(candidates, append(current[false], current[true]...))
	refused = append(refused, lost...)
	holders := map[netip.Prefix][]string{}
	for _, v6 := range []bool{false, true} {
		if !listed[v6] {
			for dst, owners := range in.holders {
				if dst.Addr().Is6() == v6 {
					holders[dst] = owners
				}
			}
			continue
		}
		ref, installed, err := in.syncFamily(familyRoutes(want, v6), current[v6])
		refused = append(refused, ref...)
		if err != nil {
			errs = append(errs, err)
		}
		for dst, owners := range installed {
			holders[dst] = owners
		}
	}
	slices.SortFunc(refused, func(a, b Refusal) int {
		return cmp.Or(a.Route.Compare(b.Route), strings.Compare(a.Reason, b.Reason))
	})
	in.logRefusals(refused)
	in.refused = refused
	in.holders = holders
	return errors.Join(errs...)
}

// wanted is the gateway chosen for a destination and the owners that want
// it via that gateway.
type wanted struct {
	via    netip.Addr
	owners []string
}

// decide settles destinations that desired routes want via different
// gateways (see Sync): candidates lists each destination's routes in
// desired order.
func (in *Installer) decide(candidates map[netip.Prefix][]Route, current []KernelRoute) (map[netip.Prefix]wanted, []Refusal) {
	want := map[netip.Prefix]wanted{}
	var refused []Refusal
	for dst, rs := range candidates {
		winner := rs[0]
		if i := slices.IndexFunc(rs, func(r Route) bool { return slices.Contains(in.holders[dst], r.Owner) }); i >= 0 {
			winner = rs[i]
		} else if i := slices.IndexFunc(rs, func(r Route) bool {
			return slices.Contains(current, KernelRoute{Dst: dst, Via: r.Via, Protocol: Protocol, Metric: Metric})
		}); i >= 0 {
			winner = rs[i]
		}
		w := wanted{via: winner.Via}
		for _, r := range rs {
			if r.Via == winner.Via {
				if !slices.Contains(w.owners, r.Owner) {
					w.owners = append(w.owners, r.Owner)
				}
				continue
			}
			// One text whatever decided, so that a standing conflict
			// is logged once.
			refused = append(refused, Refusal{r, fmt.Sprintf("%v is also wanted via %v by %s, which has precedence "+
				"(the route in place keeps its destination; else clusters in configuration order, then nodes by name): left to it",
				dst, winner.Via, ownerName(winner))})
		}
		want[dst] = w
	}
	return want, refused
}

func ownerName(r Route) string {
	if r.Owner == "" {
		return "another route"
	}
	return r.Owner
}

// syncFamily applies want (one family, validated and decided) against the
// family's current main table. It returns, besides the refusals, the owners
// of each destination whose route is in the kernel now.
func (in *Installer) syncFamily(want map[netip.Prefix]wanted, current []KernelRoute) ([]Refusal, map[netip.Prefix][]string, error) {
	ours := map[netip.Prefix][]KernelRoute{}
	foreign := map[netip.Prefix]KernelRoute{}
	for _, r := range current {
		if r.ours() {
			ours[r.Dst] = append(ours[r.Dst], r)
		} else if _, seen := foreign[r.Dst]; !seen {
			foreign[r.Dst] = r
		}
	}
	var refused []Refusal
	refuse := func(dst netip.Prefix, w wanted, reason string) {
		for _, o := range w.owners {
			refused = append(refused, Refusal{Route{dst, w.via, o}, reason})
		}
	}
	installed := map[netip.Prefix][]string{}
	var errs []error
	keep := map[KernelRoute]bool{}
	for _, dst := range sortedKeys(want) {
		w := want[dst]
		via := w.via
		if f, ok := foreign[dst]; ok {
			refuse(dst, w, fmt.Sprintf("this host already has a route to %v that is not ours (%v): left alone", dst, f))
			continue
		}
		r := KernelRoute{Dst: dst, Via: via, Protocol: Protocol, Metric: Metric}
		existing := ours[dst]
		if slices.Contains(existing, r) {
			keep[r] = true
			installed[dst] = w.owners
			continue
		}
		op, apply, verb := "add", in.k.Add, "route added"
		i := slices.IndexFunc(existing, func(e KernelRoute) bool { return e.Metric == Metric })
		if i >= 0 {
			op, apply, verb = "replace", in.k.Replace, "route changed"
		}
		if err := apply(r); err != nil {
			if reason := refusedBy(err); reason != "" {
				refuse(dst, w, reason)
				continue
			}
			errs = append(errs, fmt.Errorf("routes: %s %v: %w", op, r, err))
			if holders := in.holders[dst]; len(holders) > 0 {
				// A failure is no reason to lose precedence: the
				// retry must not hand the destination to a newcomer.
				installed[dst] = holders
			}
			continue
		}
		keep[r] = true
		installed[dst] = w.owners
		if i >= 0 {
			// What was replaced is gone: deleting it by its old
			// description would hit its replacement (a delete matches
			// a route without a gateway on destination and metric).
			keep[existing[i]] = true
		}
		in.log.Info(verb, "dst", dst, "via", via, "for", strings.Join(w.owners, ", "))
	}
	// Deleted last: a route that moves between our entries is never
	// missing in between.
	for _, dst := range sortedKeys(ours) {
		for _, r := range ours[dst] {
			if keep[r] {
				continue
			}
			if err := in.k.Delete(r); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("routes: delete %v: %w", r, err))
				continue
			}
			in.log.Info("route removed", "dst", r.Dst, "via", r.Via)
		}
	}
	return refused, installed, errors.Join(errs...)
}

// refusedBy turns the kernel errors that say "this route cannot be" into a
// refusal; others are failures to retry.
func refusedBy(err error) string {
	switch {
	case errors.Is(err, syscall.EEXIST):
		// Someone added a route to the destination after we listed.
		return "another route to the same destination appeared: left alone"
	case errors.Is(err, syscall.ENETUNREACH):
		return "the kernel finds no directly connected network for the gateway (network is unreachable)"
	}
	return ""
}

// Cleanup removes every route of ours, of both families, and nothing else.
func (in *Installer) Cleanup(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	for _, v6 := range []bool{false, true} {
		current, err := in.k.Routes(v6)
		if err != nil {
			if !errors.Is(err, syscall.EAFNOSUPPORT) {
				errs = append(errs, fmt.Errorf("routes: listing the %s routes: %w", family(v6), err))
			}
			continue
		}
		for _, r := range current {
			if !r.ours() {
				continue
			}
			if err := in.k.Delete(r); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("routes: delete %v: %w", r, err))
				continue
			}
			in.log.Info("route removed", "dst", r.Dst, "via", r.Via)
		}
	}
	in.refused, in.holders = nil, nil
	return errors.Join(errs...)
}

// logRefusals warns about each refusal that is new since the last Sync, so
// that a standing refusal is said once, not on every sync.
func (in *Installer) logRefusals(now []Refusal) {
	for _, r := range now {
		if !slices.Contains(in.refused, r) {
			in.log.Warn("route not installed", "dst", r.Route.Dst, "via", r.Route.Via, "for", r.Route.Owner, "reason", r.Reason)
		}
	}
}

// validate splits desired into the routes that may be installed, by
// destination and in desired order, and those refused before asking the
// kernel.
func validate(desired []Route, local []netip.Prefix, protected []Protected) (map[netip.Prefix][]Route, []Refusal) {
	var refused []Refusal
	refuse := func(r Route, format string, args ...any) {
		refused = append(refused, Refusal{r, fmt.Sprintf(format, args...)})
	}
	byDst := map[netip.Prefix][]Route{}
	for _, r := range desired {
		switch {
		case !r.Dst.IsValid() || !r.Via.IsValid():
			refuse(r, "not a destination and a gateway")
		case r.Dst != r.Dst.Masked():
			refuse(r, "%v is not a network address (did you mean %v?)", r.Dst, r.Dst.Masked())
		case r.Dst.Addr().Is4In6() || r.Via.Is4In6() || r.Via.Zone() != "":
			refuse(r, "IPv4-mapped or zoned addresses are not routed")
		case r.Dst.Addr().Is6() != r.Via.Is6():
			refuse(r, "the destination and the gateway are of different IP families")
		default:
			if why := special(r.Dst); why != "" {
				refuse(r, "%v overlaps %s", r.Dst, why)
			} else if p, ok := overlapping(r.Dst, local); ok {
				refuse(r, "%v overlaps this host's own address or directly connected network %v", r.Dst, p)
			} else if i := slices.IndexFunc(protected, func(p Protected) bool { return r.Dst.Contains(p.Addr) }); i >= 0 {
				refuse(r, "%v covers %v, %s: a route there would take this host's own traffic", r.Dst, protected[i].Addr, protected[i].What)
			} else if slices.ContainsFunc(local, func(p netip.Prefix) bool { return p.Addr() == r.Via }) {
				refuse(r, "the gateway %v is this host's own address", r.Via)
			} else if !onLink(r.Via, local) {
				refuse(r, "the gateway %v is on none of this host's directly connected networks", r.Via)
			} else if !slices.Contains(byDst[r.Dst], r) {
				byDst[r.Dst] = append(byDst[r.Dst], r)
			}
		}
	}
	return byDst, refused
}

// specialRanges are destinations no pod CIDR may cover: routing them to a
// node would take them from where they belong on this host.
var specialRanges = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local addresses"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the broadcast address"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local addresses"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

func special(dst netip.Prefix) string {
	for _, s := range specialRanges {
		if s.p.Overlaps(dst) {
			return s.why
		}
	}
	return ""
}

func overlapping(dst netip.Prefix, local []netip.Prefix) (netip.Prefix, bool) {
	for _, p := range local {
		if p.Masked().Overlaps(dst) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// onLink: the kernel accepts a gateway only on a directly connected network
// (without the onlink flag, which we never set: it would hide a typo).
func onLink(via netip.Addr, local []netip.Prefix) bool {
	for _, p := range local {
		if p.Contains(via) {
			return true
		}
	}
	return false
}

func familyRoutes(want map[netip.Prefix]wanted, v6 bool) map[netip.Prefix]wanted {
	out := map[netip.Prefix]wanted{}
	for dst, w := range want {
		if dst.Addr().Is6() == v6 {
			out[dst] = w
		}
	}
	return out
}

func hasFamily(candidates map[netip.Prefix][]Route, v6 bool) bool {
	for dst := range candidates {
		if dst.Addr().Is6() == v6 {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[netip.Prefix]V) []netip.Prefix {
	keys := make([]netip.Prefix, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return keys
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// Ours returns the routes of ours in the kernel whose destination lies in
// one of within: what a cluster whose node list is not known yet holds
// from an earlier run, kept until it is (pod CIDR ranges of different
// clusters never overlap, so within attributes them).
func (in *Installer) Ours(within []netip.Prefix) ([]Route, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []Route
	for _, v6 := range []bool{false, true} {
		rs, err := in.k.Routes(v6)
		if err != nil {
			if errors.Is(err, syscall.EAFNOSUPPORT) {
				continue
			}
			return nil, err
		}
		for _, r := range rs {
			if r.Protocol != Protocol || !r.Via.IsValid() {
				continue
			}
			if slices.ContainsFunc(within, func(p netip.Prefix) bool { return p.Overlaps(r.Dst) && p.Bits() <= r.Dst.Bits() }) {
				out = append(out, Route{Dst: r.Dst, Via: r.Via, Owner: "a route an earlier run installed"})
			}
		}
	}
	return out, nil
}
