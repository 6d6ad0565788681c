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
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// Compare orders routes by destination, then gateway.
func (r Route) Compare(o Route) int {
	return cmp.Or(r.Dst.Addr().Compare(o.Dst.Addr()), cmp.Compare(r.Dst.Bits(), o.Dst.Bits()), r.Via.Compare(o.Via))
}

// Refusal is a desired route that is not installed, and why.
type Refusal struct {
	Route  Route
	Reason string
}

func (r Refusal) String() string { return r.Route.String() + ": " + r.Reason }

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
// connected networks (or loopback, link-local, multicast), when another
// route to exactly the same destination exists that is not ours (it is left
// alone, and it decides), when two desired routes disagree about one
// destination, or when the gateway is this host or is not on a directly
// connected network (the kernel would refuse it).
//
// A refusal is not an error: nothing retried would change it. The error
// reports what failed in the kernel; every other route is still synced,
// and the next Sync tries again.
func (in *Installer) Sync(ctx context.Context, desired []Route) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	local, err := in.k.LocalPrefixes()
	if err != nil {
		return fmt.Errorf("routes: listing this host's addresses: %w", err)
	}
	want, refused := validate(desired, local)
	var errs []error
	for _, v6 := range []bool{false, true} {
		fam := familyRoutes(want, v6)
		current, err := in.k.Routes(v6)
		if err != nil {
			if len(fam) == 0 && errors.Is(err, syscall.EAFNOSUPPORT) {
				continue // a kernel without IPv6, and nothing to do for it
			}
			errs = append(errs, fmt.Errorf("routes: listing the %s routes: %w", family(v6), err))
			continue
		}
		ref, err := in.syncFamily(fam, current)
		refused = append(refused, ref...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	slices.SortFunc(refused, func(a, b Refusal) int {
		return cmp.Or(a.Route.Compare(b.Route), strings.Compare(a.Reason, b.Reason))
	})
	in.logRefusals(refused)
	in.refused = refused
	return errors.Join(errs...)
}

// syncFamily applies want (one family, validated) against the family's
// current main table.
func (in *Installer) syncFamily(want map[netip.Prefix]netip.Addr, current []KernelRoute) ([]Refusal, error) {
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
	var errs []error
	keep := map[KernelRoute]bool{}
	for _, dst := range sortedKeys(want) {
		via := want[dst]
		if f, ok := foreign[dst]; ok {
			refused = append(refused, Refusal{Route{dst, via}, fmt.Sprintf("this host already has a route to %v that is not ours (%v): left alone", dst, f)})
			continue
		}
		r := KernelRoute{Dst: dst, Via: via, Protocol: Protocol, Metric: Metric}
		existing := ours[dst]
		if slices.Contains(existing, r) {
			keep[r] = true
			continue
		}
		op, apply, verb := "add", in.k.Add, "route added"
		i := slices.IndexFunc(existing, func(e KernelRoute) bool { return e.Metric == Metric })
		if i >= 0 {
			op, apply, verb = "replace", in.k.Replace, "route changed"
		}
		if err := apply(r); err != nil {
			if reason := refusedBy(err); reason != "" {
				refused = append(refused, Refusal{Route{dst, via}, reason})
				continue
			}
			errs = append(errs, fmt.Errorf("routes: %s %v: %w", op, r, err))
			continue
		}
		keep[r] = true
		if i >= 0 {
			// What was replaced is gone: deleting it by its old
			// description would hit its replacement (a delete matches
			// a route without a gateway on destination and metric).
			keep[existing[i]] = true
		}
		in.log.Info(verb, "dst", dst, "via", via)
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
	return refused, errors.Join(errs...)
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
	in.refused = nil
	return errors.Join(errs...)
}

// logRefusals warns about each refusal that is new since the last Sync, so
// that a standing refusal is said once, not on every sync.
func (in *Installer) logRefusals(now []Refusal) {
	for _, r := range now {
		if !slices.Contains(in.refused, r) {
			in.log.Warn("route not installed", "dst", r.Route.Dst, "via", r.Route.Via, "reason", r.Reason)
		}
	}
}

// validate splits desired into what may be installed, by destination, and
// what is refused before asking the kernel.
func validate(desired []Route, local []netip.Prefix) (map[netip.Prefix]netip.Addr, []Refusal) {
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
			} else if slices.ContainsFunc(local, func(p netip.Prefix) bool { return p.Addr() == r.Via }) {
				refuse(r, "the gateway %v is this host's own address", r.Via)
			} else if !onLink(r.Via, local) {
				refuse(r, "the gateway %v is on none of this host's directly connected networks", r.Via)
			} else if !slices.Contains(byDst[r.Dst], r) {
				byDst[r.Dst] = append(byDst[r.Dst], r)
			}
		}
	}
	want := map[netip.Prefix]netip.Addr{}
	for dst, rs := range byDst {
		if len(rs) > 1 {
			// Two nodes claim one pod CIDR: any choice sends part of
			// the traffic to the wrong node.
			var vias []string
			for _, r := range rs {
				vias = append(vias, r.Via.String())
			}
			slices.Sort(vias)
			for _, r := range rs {
				refuse(r, "%v is wanted via several gateways (%s): none is installed", dst, strings.Join(vias, ", "))
			}
			continue
		}
		want[dst] = rs[0].Via
	}
	return want, refused
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

func familyRoutes(want map[netip.Prefix]netip.Addr, v6 bool) map[netip.Prefix]netip.Addr {
	out := map[netip.Prefix]netip.Addr{}
	for dst, via := range want {
		if dst.Addr().Is6() == v6 {
			out[dst] = via
		}
	}
	return out
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
