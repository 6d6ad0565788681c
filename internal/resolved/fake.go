package resolved

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// FakeBus is a resolved in memory: per-link registrations, that forgets
// them all when it Restarts, as a resolved that lost its state would.
type FakeBus struct {
	mu      sync.Mutex
	running bool
	links   map[int]Want
	changed chan struct{}
	// Calls counts SetLink and RevertLink calls.
	Calls int
	// Err, when set, fails every call.
	Err error
	// Unknown is how many SetLink calls fail with ErrNoSuchLink first,
	// as with a link resolved has not learnt of yet.
	Unknown int
}

var _ Bus = (*FakeBus)(nil)

// NewFakeBus returns a running resolved that holds nothing.
func NewFakeBus() *FakeBus {
	return &FakeBus{running: true, links: map[int]Want{}, changed: make(chan struct{}, 1)}
}

// SetRunning starts or stops it; a start forgets every link.
func (f *FakeBus) SetRunning(running bool) {
	f.mu.Lock()
	f.running = running
	if running {
		f.links = map[int]Want{}
	}
	f.mu.Unlock()
	f.notify()
}

// Restart is a stop and a start that forgets every link.
func (f *FakeBus) Restart() { f.SetRunning(true) }

// Stop stops it: until Start, it holds nothing and answers nothing.
func (f *FakeBus) Stop() {
	f.mu.Lock()
	f.running = false
	f.mu.Unlock()
	f.notify()
}

// Start starts it again with the links it held, as resolved reads back
// what it saved in /run/systemd/resolve/netif/.
func (f *FakeBus) Start() {
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	f.notify()
}

// Links are the registrations it holds, by link index.
func (f *FakeBus) Links() map[int]Want {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.links)
}

func (f *FakeBus) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *FakeBus) check() error {
	if f.Err != nil {
		return f.Err
	}
	if !f.running {
		return errors.New("org.freedesktop.resolve1 has no owner")
	}
	return nil
}

func (f *FakeBus) Running(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running, f.Err
}

func (f *FakeBus) SetLink(_ context.Context, ifindex int, want Want) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	f.Calls++
	if f.Unknown > 0 {
		f.Unknown--
		return ErrNoSuchLink
	}
	want.Servers = slices.Clone(want.Servers)
	want.Domains = slices.Sorted(slices.Values(want.Domains))
	f.links[ifindex] = want
	return nil
}

func (f *FakeBus) Link(_ context.Context, ifindex int) (Want, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return Want{}, false, err
	}
	w, ok := f.links[ifindex]
	return w, ok, nil
}

func (f *FakeBus) RevertLink(_ context.Context, ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	f.Calls++
	delete(f.links, ifindex)
	return nil
}

func (f *FakeBus) Changed() <-chan struct{} { return f.changed }

func (f *FakeBus) Close() {}

// FakeLinks are links in memory. Foreign names a link of someone else's.
type FakeLinks struct {
	mu      sync.Mutex
	next    int
	links   map[string]fakeLink
	Foreign string
}

type fakeLink struct {
	index int
	addrs []netip.Addr
}

var _ Links = (*FakeLinks)(nil)

func NewFakeLinks() *FakeLinks { return &FakeLinks{next: 10, links: map[string]fakeLink{}} }

// Addrs are the addresses of our link of that name, nil without one.
func (f *FakeLinks) Addrs(name string) []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.links[name].addrs)
}

func (f *FakeLinks) Ensure(name string, addrs []netip.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == f.Foreign {
		return 0, errors.New("a link of that name exists that kube-outpost did not make")
	}
	l, ok := f.links[name]
	if !ok {
		l.index = f.next
		f.next++
	}
	l.addrs = slices.Clone(addrs)
	f.links[name] = l
	return l.index, nil
}

func (f *FakeLinks) Index(name string) (int, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	return l.index, ok, nil
}

func (f *FakeLinks) Delete(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, name)
	return nil
}
