package resolved

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

var (
	server = netip.MustParseAddrPort("127.0.0.153:53")
	want   = Want{Servers: []netip.AddrPort{server}, Domains: []string{"96.10.in-addr.arpa", "cluster.local", "prod.internal"}}
)

func TestServers(t *testing.T) {
	listen := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.5:53"), server, netip.MustParseAddrPort("[::1]:53"),
		netip.MustParseAddrPort("0.0.0.0:5353"), netip.MustParseAddrPort("127.0.0.1:5353"),
	}
	got := Servers(listen)
	if w := []netip.AddrPort{server, netip.MustParseAddrPort("127.0.0.1:5353")}; !slices.Equal(got, w) {
		t.Fatalf("Servers = %v, want %v: only 127.x addresses can be put on our link", got, w)
	}
}

func TestRegisterHoldsCleanup(t *testing.T) {
	ctx := context.Background()
	bus, links := NewFakeBus(), NewFakeLinks()
	if ok, err := Holds(ctx, bus, links, want); ok || err != nil {
		t.Fatalf("Holds before Register = %v, %v", ok, err)
	}
	// resolved learns of the new link after two tries.
	bus.Unknown = 2
	i, err := Register(ctx, bus, links, want)
	if err != nil {
		t.Fatal(err)
	}
	if got := links.Addrs(LinkName); !slices.Equal(got, []netip.Addr{server.Addr()}) {
		t.Errorf("link addresses %v, want the server's", got)
	}
	if got := bus.Links()[i]; !got.Equal(want) || got.DefaultRoute {
		t.Errorf("resolved holds %+v, want %+v without DefaultRoute", got, want)
	}
	if ok, err := Holds(ctx, bus, links, want); !ok || err != nil {
		t.Fatalf("Holds after Register = %v, %v", ok, err)
	}
	other := want
	other.Domains = []string{"prod.internal"}
	if ok, _ := Holds(ctx, bus, links, other); ok {
		t.Error("Holds of other zones: true")
	}
	bus.Restart()
	if ok, _ := Holds(ctx, bus, links, want); ok {
		t.Error("Holds after resolved forgot: true")
	}
	if _, err := Register(ctx, bus, links, want); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(ctx, bus, links); err != nil {
		t.Fatal(err)
	}
	if len(bus.Links()) != 0 || links.Addrs(LinkName) != nil {
		t.Errorf("after Cleanup: resolved holds %v, link addresses %v", bus.Links(), links.Addrs(LinkName))
	}
}

// TestCleanupWithoutLink: without our link, resolved is not asked
// anything, running or not.
func TestCleanupWithoutLink(t *testing.T) {
	bus, links := NewFakeBus(), NewFakeLinks()
	bus.Err = errors.New("must not be called")
	if err := Cleanup(context.Background(), bus, links); err != nil || bus.Calls != 0 {
		t.Fatalf("Cleanup = %v with %d calls", err, bus.Calls)
	}
}

// TestCleanupResolvedStopped: the link goes even when resolved does not
// run, which forgets it when it starts.
func TestCleanupResolvedStopped(t *testing.T) {
	ctx := context.Background()
	bus, links := NewFakeBus(), NewFakeLinks()
	if _, err := Register(ctx, bus, links, want); err != nil {
		t.Fatal(err)
	}
	bus.SetRunning(false)
	if err := Cleanup(ctx, bus, links); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := links.Index(LinkName); ok {
		t.Error("the link stayed")
	}
}

func TestRegisterRefuses(t *testing.T) {
	ctx := context.Background()
	bus, links := NewFakeBus(), NewFakeLinks()
	if _, err := Register(ctx, bus, links, Want{Domains: want.Domains}); !errors.Is(err, ErrNoServer) {
		t.Errorf("no server: %v", err)
	}
	links.Foreign = LinkName
	if _, err := Register(ctx, bus, links, want); err == nil || bus.Calls != 0 {
		t.Errorf("a link of that name not ours: err %v, %d calls to resolved", err, bus.Calls)
	}
}
