// Package resolved registers the daemon's DNS server with systemd-resolved
// for the clusters' zones and nothing else, as VPN clients do: per-link DNS
// servers and routing-only domains (~prod.internal) on a link of ours, with
// DefaultRoute off, so that resolved sends that link only names under the
// zones and every other name where it sent it before.
//
// The link is a dummy link, LinkName, that carries the server's 127.x
// addresses: resolved before v253 binds its query socket to the link of
// the server, and the kernel routes a 127.x destination out of a link only
// when that address is on it (systemd issues 23010, 25397); a global DNS=
// in a drop-in instead would get every name outside the zones too, and
// take the place of FallbackDNS= on hosts without other servers.
package resolved

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
)

// LinkName is the dummy link the registration is on. Deleting it ends the
// registration: resolved forgets a link that goes.
const LinkName = "outpost-dns"

// Bus is what the registration needs of resolved's D-Bus API
// (org.freedesktop.resolve1, man org.freedesktop.resolve1).
type Bus interface {
	// Running says whether resolved owns its bus name now. Nothing
	// starts it: a host that does not run it is left alone.
	Running(ctx context.Context) (bool, error)
	// SetLink gives the link its servers and routing-only domains, with
	// DefaultRoute, LLMNR, mDNS, DNSSEC and DNS over TLS off for it.
	SetLink(ctx context.Context, ifindex int, want Want) error
	// Link reads back what resolved holds for the link.
	Link(ctx context.Context, ifindex int) (Want, bool, error)
	// RevertLink drops everything set on the link.
	RevertLink(ctx context.Context, ifindex int) error
	// Changed receives a value each time resolved's bus name changes
	// owner (resolved started, stopped or restarted), and is closed
	// when the connection to the bus ends.
	Changed() <-chan struct{}
	Close()
}

// Links is what the registration needs of the kernel: the dummy link.
type Links interface {
	// Ensure makes the link exist, up, with exactly addrs (each /32),
	// and returns its index. A link of that name that is not ours is
	// an error, never changed.
	Ensure(name string, addrs []netip.Addr) (int, error)
	// Index is the index of our link of that name, ok false when there
	// is none (or the link of that name is not ours).
	Index(name string) (index int, ok bool, err error)
	// Delete removes our link of that name, if there is one.
	Delete(name string) error
}

// Want is a registration: the servers resolved sends the domains to.
type Want struct {
	// Servers are the DNS server's 127.x listen addresses.
	Servers []netip.AddrPort
	// Domains are routing-only domains (written ~domain by resolvectl),
	// sorted, without the final dot.
	Domains []string
	// DefaultRoute is always false in what is registered: read back, it
	// says whether resolved would send this link names outside Domains.
	DefaultRoute bool
}

// Equal says whether two registrations are the same.
func (w Want) Equal(o Want) bool {
	return slices.Equal(w.Servers, o.Servers) && slices.Equal(w.Domains, o.Domains) && w.DefaultRoute == o.DefaultRoute
}

// ErrNoSuchLink: resolved does not know the link (yet: it learns of a new
// link from the kernel a moment after it is made).
var ErrNoSuchLink = errors.New("systemd-resolved does not know the link")

// ErrNoServer: no listen address resolved can reach through a link.
var ErrNoServer = errors.New("dns.listen has no 127.x.x.x address, the only kind resolved reaches through a link of ours")

// Servers are the listen addresses that can be registered: IPv4 loopback
// ones, which Register puts on the link. A server on another address
// (a LAN address for routed hosts) is reached through its own link, which
// is not ours to configure.
func Servers(listen []netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range listen {
		if a.Addr().Is4() && a.Addr().IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

// Register makes the link and gives it to resolved with want's servers
// and domains. It returns the link's index.
func Register(ctx context.Context, bus Bus, links Links, want Want) (int, error) {
	if len(want.Servers) == 0 {
		return 0, ErrNoServer
	}
	var addrs []netip.Addr
	for _, s := range want.Servers {
		if !slices.Contains(addrs, s.Addr()) {
			addrs = append(addrs, s.Addr())
		}
	}
	i, err := links.Ensure(LinkName, addrs)
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", LinkName, err)
	}
	want.DefaultRoute = false
	// A link just made may be unknown to resolved for a moment.
	for tries := 0; ; tries++ {
		err = bus.SetLink(ctx, i, want)
		if err == nil || !errors.Is(err, ErrNoSuchLink) || tries == linkTries {
			break
		}
		select {
		case <-ctx.Done():
			return i, ctx.Err()
		case <-time.After(linkWait):
		}
	}
	if err != nil {
		return i, fmt.Errorf("systemd-resolved: link %s: %w", LinkName, err)
	}
	return i, nil
}

// How long Register waits for resolved to learn of a new link: 5 s.
const (
	linkTries = 50
	linkWait  = 100 * time.Millisecond
)

// Holds says whether resolved holds want for our link now: false when the
// link is gone, resolved forgot it, or holds something else.
func Holds(ctx context.Context, bus Bus, links Links, want Want) (bool, error) {
	i, ok, err := links.Index(LinkName)
	if err != nil || !ok {
		return false, err
	}
	got, ok, err := bus.Link(ctx, i)
	if err != nil || !ok {
		return false, err
	}
	want.DefaultRoute = false
	return got.Equal(want), nil
}

// Cleanup ends a registration: resolved is told to forget the link (when
// it runs and bus is not nil), and the link goes. Without our link there
// is nothing to undo, and resolved is not asked anything.
func Cleanup(ctx context.Context, bus Bus, links Links) error {
	i, ok, err := links.Index(LinkName)
	if err != nil || !ok {
		return err
	}
	var errs []error
	if bus != nil {
		if running, err := bus.Running(ctx); err != nil {
			errs = append(errs, err)
		} else if running {
			// Deleting the link is enough for a running resolved; the
			// revert first spares it from routing to a link that is
			// going meanwhile.
			if err := bus.RevertLink(ctx, i); err != nil {
				errs = append(errs, fmt.Errorf("systemd-resolved: reverting link %s: %w", LinkName, err))
			}
		}
	}
	if err := links.Delete(LinkName); err != nil {
		errs = append(errs, fmt.Errorf("link %s: %w", LinkName, err))
	}
	return errors.Join(errs...)
}

// HostNetns says why the daemon must not talk to resolved about its
// links: "" when it runs in the network namespace of PID 1, where
// resolved runs. resolved knows links by index in its own namespace, so
// a daemon in another one (a container, a test's namespace) would have it
// configure or revert whatever host link has the index of ours. Where
// PID 1's namespace cannot be read (the unit's bounded capabilities
// forbid it: reading another process's namespace needs CAP_SYS_PTRACE
// unless our capabilities are a superset of its own), "": the unit runs
// in the host's namespace.
func HostNetns() string {
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 == nil && err2 == nil && self != init {
		return "the daemon runs in a network namespace other than systemd-resolved's, which would read our link's index as one of its own links"
	}
	return ""
}
