package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Fake is a main routing table in memory with the kernel's rules for what
// the installer does: one route per destination and metric, whoever owns
// it; Replace overwrites whatever holds that slot (as the kernel does, so a
// diff that aims Replace at a foreign route is caught); Delete matches the
// protocol and gateway; a gateway must be on a connected network.
type Fake struct {
	mu     sync.Mutex
	routes []KernelRoute
	local  []netip.Prefix
	ops    []string
	// Fail, when set, is asked before each Add, Replace and Delete
	// ("add", "replace", "delete") and its error returned instead.
	Fail func(op string, r KernelRoute) error
}

var _ Kernel = &Fake{}

// NewFake returns a table holding routes, on a host with the given local
// addresses (address/subnet length, as `ip addr` shows them).
func NewFake(local []netip.Prefix, routes ...KernelRoute) *Fake {
	return &Fake{local: slices.Clone(local), routes: slices.Clone(routes)}
}

func (f *Fake) Routes(v6 bool) ([]KernelRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []KernelRoute
	for _, r := range f.routes {
		if r.Dst.Addr().Is6() == v6 {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *Fake) LocalPrefixes() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.local), nil
}

func (f *Fake) Add(r KernelRoute) error     { return f.write("add", r) }
func (f *Fake) Replace(r KernelRoute) error { return f.write("replace", r) }

func (f *Fake) write(op string, r KernelRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail(op, r); err != nil {
			return err
		}
	}
	if r.Via.IsValid() && !slices.ContainsFunc(f.local, func(p netip.Prefix) bool { return p.Contains(r.Via) }) {
		return syscall.ENETUNREACH
	}
	i := slices.IndexFunc(f.routes, func(e KernelRoute) bool { return e.Dst == r.Dst && e.Metric == r.Metric })
	switch {
	case i >= 0 && op == "add":
		return syscall.EEXIST
	case i >= 0:
		f.routes[i] = r
	default:
		f.routes = append(f.routes, r)
	}
	f.ops = append(f.ops, op+" "+r.String())
	return nil
}

func (f *Fake) Delete(r KernelRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail("delete", r); err != nil {
			return err
		}
	}
	i := slices.IndexFunc(f.routes, func(e KernelRoute) bool {
		return e.Dst == r.Dst && e.Metric == r.Metric &&
			(r.Protocol == 0 || e.Protocol == r.Protocol) && (!r.Via.IsValid() || e.Via == r.Via)
	})
	if i < 0 {
		return syscall.ESRCH
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	f.ops = append(f.ops, "delete "+r.String())
	return nil
}

// Ops returns the changes made so far, one line each, and forgets them.
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// Dump is the table sorted by destination, metric and protocol, one route a
// line: deterministic, for comparing with a golden text.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs := slices.Clone(f.routes)
	slices.SortFunc(rs, func(a, b KernelRoute) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()),
			cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Protocol, b.Protocol))
	})
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintln(&b, r.String())
	}
	return b.String()
}
