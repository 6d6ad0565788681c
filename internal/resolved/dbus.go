package resolved

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"
)

const (
	busName    = "org.freedesktop.resolve1"
	busPath    = "/org/freedesktop/resolve1"
	manager    = busName + ".Manager"
	linkIface  = busName + ".Link"
	dbusDaemon = "org.freedesktop.DBus"
)

// DBus is the Bus of the system bus.
type DBus struct {
	conn    *dbus.Conn
	changed chan struct{}
}

var _ Bus = (*DBus)(nil)

// Dial connects to the system bus and follows resolved's bus name.
func Dial() (*DBus, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("connecting to the system bus: %w", err)
	}
	b := &DBus{conn: conn, changed: make(chan struct{}, 1)}
	if err := conn.AddMatchSignal(dbus.WithMatchSender(dbusDaemon), dbus.WithMatchInterface(dbusDaemon),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, busName)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("following %s on the system bus: %w", busName, err)
	}
	signals := make(chan *dbus.Signal, 8)
	conn.Signal(signals)
	go func() {
		// godbus closes signals when the connection ends.
		defer close(b.changed)
		for range signals {
			select {
			case b.changed <- struct{}{}:
			default: // one pending change says it all
			}
		}
	}()
	return b, nil
}

func (b *DBus) Changed() <-chan struct{} { return b.changed }

func (b *DBus) Close() { b.conn.Close() }

func (b *DBus) Running(ctx context.Context) (bool, error) {
	var has bool
	err := b.conn.BusObject().CallWithContext(ctx, dbusDaemon+".NameHasOwner", 0, busName).Store(&has)
	if err != nil {
		return false, fmt.Errorf("asking the system bus for %s: %w", busName, err)
	}
	return has, nil
}

// call calls a method of resolved's Manager, never starting resolved.
func (b *DBus) call(ctx context.Context, method string, args ...any) *dbus.Call {
	return b.conn.Object(busName, busPath).CallWithContext(ctx, manager+"."+method, dbus.FlagNoAutoStart, args...)
}

type dnsServer struct {
	Family  int32
	Address []byte
}

type dnsServerEx struct {
	Family  int32
	Address []byte
	Port    uint16
	Name    string
}

type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

func (b *DBus) SetLink(ctx context.Context, ifindex int, want Want) error {
	i := int32(ifindex)
	// DefaultRoute and the domains first: a link with servers and
	// neither would be a default route for a moment, and get every name.
	type step struct {
		method string
		arg    any
		// optional: a resolved built without the feature refuses it,
		// and then it cannot be on either.
		optional bool
	}
	steps := []step{
		{"SetLinkDefaultRoute", false, false},
		{"SetLinkLLMNR", "no", true},
		{"SetLinkMulticastDNS", "no", true},
		// The zones are not signed, and never could be: validating
		// them against the root's proof that .internal does not exist
		// would fail every answer.
		{"SetLinkDNSSEC", "no", true},
		// The server speaks plain DNS over loopback.
		{"SetLinkDNSOverTLS", "no", true},
		{"SetLinkDomains", domainsArg(want.Domains), false},
	}
	// SetLinkDNSEx (v246) carries a port; SetLinkDNS suffices for 53 and
	// works with older resolved too.
	if slices.ContainsFunc(want.Servers, func(s netip.AddrPort) bool { return s.Port() != 53 }) {
		var servers []dnsServerEx
		for _, s := range want.Servers {
			servers = append(servers, dnsServerEx{Family: 2, Address: s.Addr().AsSlice(), Port: s.Port()})
		}
		steps = append(steps, step{"SetLinkDNSEx", servers, false})
	} else {
		var servers []dnsServer
		for _, s := range want.Servers {
			servers = append(servers, dnsServer{Family: 2, Address: s.Addr().AsSlice()})
		}
		steps = append(steps, step{"SetLinkDNS", servers, false})
	}
	for _, s := range steps {
		if err := b.call(ctx, s.method, i, s.arg).Err; err != nil {
			if noSuchLink(err) {
				return fmt.Errorf("%s: %w: %v", s.method, ErrNoSuchLink, err)
			}
			if !s.optional {
				return fmt.Errorf("%s: %w", s.method, err)
			}
		}
	}
	return nil
}

func noSuchLink(err error) bool {
	var derr dbus.Error
	return errors.As(err, &derr) && strings.HasSuffix(derr.Name, ".NoSuchLink")
}

func domainsArg(domains []string) []linkDomain {
	out := []linkDomain{}
	for _, d := range domains {
		out = append(out, linkDomain{Domain: d, RoutingOnly: true})
	}
	return out
}

func (b *DBus) RevertLink(ctx context.Context, ifindex int) error {
	return b.call(ctx, "RevertLink", int32(ifindex)).Err
}

// Link reads the link's DNSEx (with ports), Domains and DefaultRoute. ok
// is false when resolved does not know the link.
func (b *DBus) Link(ctx context.Context, ifindex int) (Want, bool, error) {
	var path dbus.ObjectPath
	if err := b.call(ctx, "GetLink", int32(ifindex)).Store(&path); err != nil {
		if noSuchLink(err) {
			return Want{}, false, nil
		}
		return Want{}, false, fmt.Errorf("GetLink: %w", err)
	}
	obj := b.conn.Object(busName, path)
	var got Want
	var servers []dnsServerEx
	if err := getProperty(ctx, obj, "DNSEx", &servers); err != nil {
		// Before systemd 246: addresses alone, port 53.
		var plain []dnsServer
		if err := getProperty(ctx, obj, "DNS", &plain); err != nil {
			return Want{}, false, err
		}
		servers = servers[:0]
		for _, p := range plain {
			servers = append(servers, dnsServerEx{Family: p.Family, Address: p.Address})
		}
	}
	for _, s := range servers {
		a, ok := netip.AddrFromSlice(s.Address)
		if !ok {
			continue
		}
		port := s.Port
		if port == 0 {
			port = 53
		}
		got.Servers = append(got.Servers, netip.AddrPortFrom(a.Unmap(), port))
	}
	var domains []linkDomain
	if err := getProperty(ctx, obj, "Domains", &domains); err != nil {
		return Want{}, false, err
	}
	for _, d := range domains {
		if d.RoutingOnly {
			got.Domains = append(got.Domains, strings.TrimSuffix(d.Domain, "."))
		} else {
			// A search domain is not ours: it makes the check fail.
			got.Domains = append(got.Domains, "search:"+d.Domain)
		}
	}
	slices.Sort(got.Domains)
	if err := getProperty(ctx, obj, "DefaultRoute", &got.DefaultRoute); err != nil {
		return Want{}, false, err
	}
	return got, true, nil
}

func getProperty(ctx context.Context, obj dbus.BusObject, name string, into any) error {
	var v dbus.Variant
	err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", dbus.FlagNoAutoStart, linkIface, name).Store(&v)
	if err != nil {
		return fmt.Errorf("reading link property %s: %w", name, err)
	}
	if err := dbus.Store([]any{v.Value()}, into); err != nil {
		return fmt.Errorf("reading link property %s: %w", name, err)
	}
	return nil
}
