package ipvs

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// FakeIPSet is an in-memory IPSetRunner. Like ipset restore, it applies a
// script line by line and stops at the first bad one, keeping what came
// before: restore is not transactional, which is why the Proxier swaps.
type FakeIPSet struct {
	mu   sync.Mutex
	sets map[string]*fakeSet

	// Restores counts Restore calls, failed ones included.
	Restores int
	// FailNext, when set, makes the next Restore fail without doing
	// anything.
	FailNext error
	// InUse, when set, says whether a kernel rule names a set: such a set
	// cannot be destroyed, as in the kernel.
	InUse func(name string) bool
}

type fakeSet struct {
	typ, family string
	members     map[string]bool
}

var _ IPSetRunner = (*FakeIPSet)(nil)

// NewFakeIPSet returns a FakeIPSet without sets.
func NewFakeIPSet() *FakeIPSet { return &FakeIPSet{sets: map[string]*fakeSet{}} }

// List implements IPSetRunner.
func (f *FakeIPSet) List(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.sets)), nil
}

// Save implements IPSetRunner.
func (f *FakeIPSet) Save(_ context.Context, name string) ([]string, error) {
	if m := f.Members(name); m != nil {
		return m, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sets[name] != nil {
		return []string{}, nil
	}
	return nil, nil
}

// Members returns a set's members sorted, nil when the set does not exist.
func (f *FakeIPSet) Members(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return nil
	}
	// Not nil for an empty set: nil means no set.
	return append([]string{}, slices.Sorted(maps.Keys(s.members))...)
}

// Dump returns every set with its members, in a fixed order.
func (f *FakeIPSet) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.sets)) {
		s := f.sets[name]
		fmt.Fprintf(&b, "%s %s family %s\n", name, s.typ, s.family)
		for _, m := range slices.Sorted(maps.Keys(s.members)) {
			fmt.Fprintf(&b, "  %s\n", m)
		}
	}
	return b.String()
}

// Restore implements IPSetRunner, with -exist: creating an identical set,
// adding a present member and deleting an absent one are no errors.
func (f *FakeIPSet) Restore(_ context.Context, script []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Restores++
	if err := f.FailNext; err != nil {
		f.FailNext = nil
		return err
	}
	for i, line := range strings.Split(string(script), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if err := f.command(fields); err != nil {
			return fmt.Errorf("ipset restore: Error in line %d: %w", i+1, err)
		}
	}
	return nil
}

func (f *FakeIPSet) command(fields []string) error {
	cmd, args := fields[0], fields[1:]
	need := map[string]int{"flush": 1, "destroy": 1, "swap": 2, "add": 2, "del": 2}[cmd]
	if cmd == "create" {
		need = 2
	}
	if need == 0 {
		return fmt.Errorf("unknown command %q", cmd)
	}
	if len(args) < need || cmd != "create" && len(args) != need {
		return fmt.Errorf("%s: wrong number of arguments: %q", cmd, strings.Join(fields, " "))
	}
	name := args[0]
	s := f.sets[name]
	if cmd != "create" && s == nil {
		return fmt.Errorf("the set with the given name does not exist: %s", name)
	}
	switch cmd {
	case "create":
		ns, err := newFakeSet(args[1], args[2:])
		if err != nil {
			return err
		}
		if s != nil {
			if s.typ != ns.typ || s.family != ns.family {
				return fmt.Errorf("set %s cannot be created: set with the same name already exists", name)
			}
			return nil
		}
		if len(name) > 31 {
			return fmt.Errorf("set name %q is longer than 31 characters", name)
		}
		f.sets[name] = ns
	case "flush":
		clear(s.members)
	case "destroy":
		if f.InUse != nil && f.InUse(name) {
			return fmt.Errorf("set %s cannot be destroyed: it is in use by a kernel component", name)
		}
		delete(f.sets, name)
	case "swap":
		o := f.sets[args[1]]
		switch {
		case o == nil:
			return fmt.Errorf("the set with the given name does not exist: %s", args[1])
		case o.typ != s.typ || o.family != s.family:
			return fmt.Errorf("the sets %s and %s cannot be swapped: their type or family differ", name, args[1])
		}
		f.sets[name], f.sets[args[1]] = o, s
	case "add", "del":
		if err := s.check(args[1]); err != nil {
			return err
		}
		if cmd == "add" {
			s.members[args[1]] = true
		} else {
			delete(s.members, args[1])
		}
	}
	return nil
}

func newFakeSet(typ string, opts []string) (*fakeSet, error) {
	if typ != "hash:ip" && typ != "hash:ip,port" && typ != "hash:net" {
		return nil, fmt.Errorf("unsupported set type %q", typ)
	}
	s := &fakeSet{typ: typ, family: "inet", members: map[string]bool{}}
	for i := 0; i < len(opts); i += 2 {
		if i+1 >= len(opts) {
			return nil, fmt.Errorf("option %q without a value", opts[i])
		}
		switch opts[i] {
		case "family":
			if opts[i+1] != "inet" && opts[i+1] != "inet6" {
				return nil, fmt.Errorf("unknown family %q", opts[i+1])
			}
			s.family = opts[i+1]
		case "maxelem", "hashsize", "timeout":
		default:
			return nil, fmt.Errorf("unknown option %q", opts[i])
		}
	}
	return s, nil
}

// check validates a member as ipset would for the set's type and family.
func (s *fakeSet) check(m string) error {
	if s.typ == "hash:net" {
		return s.checkNet(m)
	}
	ipPart, portPart, hasPort := strings.Cut(m, ",")
	if hasPort != (s.typ == "hash:ip,port") {
		return fmt.Errorf("member %q does not fit a %s set", m, s.typ)
	}
	ip, err := netip.ParseAddr(ipPart)
	if err != nil {
		return fmt.Errorf("member %q: %v", m, err)
	}
	if ip.Is6() != (s.family == "inet6") {
		return fmt.Errorf("member %q: wrong family for a %s set", m, s.family)
	}
	if hasPort {
		proto, port, ok := strings.Cut(portPart, ":")
		var n int
		if _, err := fmt.Sscanf(port, "%d", &n); !ok || err != nil || n < 0 || n > 65535 ||
			(proto != "tcp" && proto != "udp" && proto != "sctp") {
			return fmt.Errorf("member %q: want ip,proto:port", m)
		}
	}
	return nil
}

// checkNet validates a hash:net member: an address or a network, of the
// set's family, with a prefix length ipset accepts (not /0).
func (s *fakeSet) checkNet(m string) error {
	p, err := netip.ParsePrefix(m)
	if err != nil {
		a, aerr := netip.ParseAddr(m)
		if aerr != nil {
			return fmt.Errorf("member %q: %v", m, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is6() != (s.family == "inet6") {
		return fmt.Errorf("member %q: wrong family for a %s set", m, s.family)
	}
	if p.Bits() == 0 {
		return fmt.Errorf("member %q: the CIDR parameter of the IP address is invalid", m)
	}
	return nil
}
