package ipvs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// FakeKernel is an in-memory Kernel for tests: IPVS, outpost0, the ip_vs
// module and sysctls, with the kernel's errors for impossible operations
// (adding what exists, deleting what does not). It logs every operation
// that changes something, so tests can count them.
type FakeKernel struct {
	mu sync.Mutex

	// ModuleAvailable says whether EnsureModule can load ip_vs; when not,
	// it fails with a *ModuleMissingError as on a kernel without it.
	ModuleAvailable bool
	loaded          bool
	sysctls         map[string]string
	iface           bool
	addrs           map[netip.Addr]bool
	svcs            map[ServiceKey]*fakeVS
	ops             []string
	// fail holds errors to return from the next call of a method, by
	// method name.
	fail map[string]error
}

type fakeVS struct {
	svc   Service
	dests map[netip.AddrPort]*Destination
}

var _ Kernel = (*FakeKernel)(nil)

// NewFakeKernel returns a FakeKernel where ip_vs can be loaded but is not
// yet, without outpost0.
func NewFakeKernel() *FakeKernel {
	return &FakeKernel{
		ModuleAvailable: true,
		sysctls:         map[string]string{},
		addrs:           map[netip.Addr]bool{},
		svcs:            map[ServiceKey]*fakeVS{},
		fail:            map[string]error{},
	}
}

// FailNext makes the next call of method (e.g. "AddService") return err.
func (f *FakeKernel) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = err
}

func (f *FakeKernel) failing(method string) error {
	err := f.fail[method]
	delete(f.fail, method)
	return err
}

// TakeOps returns the operations that changed something since the last
// call, in order, and forgets them.
func (f *FakeKernel) TakeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

func (f *FakeKernel) logf(format string, args ...any) {
	f.ops = append(f.ops, fmt.Sprintf(format, args...))
}

// SetConns sets the connection counts IPVS reports for a destination.
func (f *FakeKernel) SetConns(key ServiceKey, dest netip.AddrPort, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs := f.svcs[key]
	if vs == nil || vs.dests[dest] == nil {
		return fmt.Errorf("no destination %s in %s", dest, key)
	}
	vs.dests[dest].ActiveConns, vs.dests[dest].InactiveConns = active, inactive
	return nil
}

// Sysctl returns the value of a sysctl set through the fake, "" if none.
func (f *FakeKernel) Sysctl(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sysctls[name]
}

func (f *FakeKernel) EnsureModule(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("EnsureModule"); err != nil {
		return err
	}
	if f.loaded {
		return nil
	}
	if !f.ModuleAvailable {
		return &ModuleMissingError{Module: "ip_vs", Release: "6.1.0-fake-amd64",
			Err: errors.New("/proc/net/ip_vs does not exist and modprobe ip_vs failed: exit status 1: modprobe: FATAL: Module ip_vs not found")}
	}
	f.loaded = true
	f.logf("load-module ip_vs")
	return nil
}

func (f *FakeKernel) SetSysctl(name, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("SetSysctl"); err != nil {
		return err
	}
	if strings.HasPrefix(name, "net/ipv4/vs/") && !f.loaded {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, syscall.ENOENT)
	}
	if f.sysctls[name] != value {
		f.sysctls[name] = value
		f.logf("sysctl %s=%s", name, value)
	}
	return nil
}

func (f *FakeKernel) List() ([]VirtualServer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("List"); err != nil {
		return nil, err
	}
	var out []VirtualServer
	for _, key := range sortedKeys(f.svcs) {
		vs := f.svcs[key]
		v := VirtualServer{Service: vs.svc}
		for _, a := range slices.SortedFunc(maps.Keys(vs.dests), netip.AddrPort.Compare) {
			v.Destinations = append(v.Destinations, *vs.dests[a])
		}
		out = append(out, v)
	}
	return out, nil
}

// fakeSchedulers are the schedulers a Debian kernel has modules for.
var fakeSchedulers = map[string]bool{
	"rr": true, "wrr": true, "lc": true, "wlc": true, "lblc": true, "lblcr": true, "dh": true,
	"sh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "mh": true, "twos": true,
}

// ipvsOp checks what every IPVS operation needs and returns the service.
func (f *FakeKernel) ipvsOp(method, op string, s Service) (*fakeVS, error) {
	if err := f.failing(method); err != nil {
		return nil, err
	}
	if !f.loaded {
		return nil, fmt.Errorf("%s %s: ip_vs is not loaded", op, s.ServiceKey)
	}
	if !s.VIP.IsValid() {
		return nil, fmt.Errorf("%s: invalid address: %w", op, syscall.EINVAL)
	}
	switch s.Protocol {
	case model.TCP, model.UDP, model.SCTP:
	default:
		return nil, fmt.Errorf("%s %s: protocol: %w", op, s.ServiceKey, syscall.EINVAL)
	}
	return f.svcs[s.ServiceKey], nil
}

func (f *FakeKernel) AddService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.ipvsOp("AddService", "add virtual server", s)
	switch {
	case err != nil:
		return err
	case vs != nil:
		return fmt.Errorf("add virtual server %s: %w", s, syscall.EEXIST)
	case !fakeSchedulers[s.Scheduler]:
		return fmt.Errorf("add virtual server %s: %w", s, syscall.ENOENT)
	}
	f.svcs[s.ServiceKey] = &fakeVS{svc: s, dests: map[netip.AddrPort]*Destination{}}
	f.logf("add-service %s", s)
	return nil
}

func (f *FakeKernel) UpdateService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.ipvsOp("UpdateService", "update virtual server", s)
	switch {
	case err != nil:
		return err
	case vs == nil:
		return fmt.Errorf("update virtual server %s: %w", s, syscall.ESRCH)
	case !fakeSchedulers[s.Scheduler]:
		return fmt.Errorf("update virtual server %s: %w", s, syscall.ENOENT)
	}
	vs.svc = s
	f.logf("update-service %s", s)
	return nil
}

func (f *FakeKernel) DelService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.ipvsOp("DelService", "delete virtual server", s)
	switch {
	case err != nil:
		return err
	case vs == nil:
		return fmt.Errorf("delete virtual server %s: %w", s, syscall.ESRCH)
	}
	delete(f.svcs, s.ServiceKey)
	f.logf("del-service %s", s.ServiceKey)
	return nil
}

// destOp checks what every destination operation needs.
func (f *FakeKernel) destOp(method, op string, s Service, d Destination) (*fakeVS, error) {
	vs, err := f.ipvsOp(method, op, s)
	switch {
	case err != nil:
		return nil, err
	case vs == nil:
		return nil, fmt.Errorf("%s %s destination %s: %w", op, s.ServiceKey, d.Addr, syscall.ESRCH)
	case !d.Addr.IsValid() || d.Addr.Addr().Is6() != s.VIP.Is6():
		// Masquerading across families is not supported.
		return nil, fmt.Errorf("%s %s destination %s: %w", op, s.ServiceKey, d.Addr, syscall.EINVAL)
	case d.Weight < 0:
		return nil, fmt.Errorf("%s %s destination %s: weight %d: %w", op, s.ServiceKey, d.Addr, d.Weight, syscall.ERANGE)
	}
	return vs, nil
}

func (f *FakeKernel) AddDest(s Service, d Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.destOp("AddDest", "add", s, d)
	if err != nil {
		return err
	}
	if vs.dests[d.Addr] != nil {
		return fmt.Errorf("add %s destination %s: %w", s.ServiceKey, d.Addr, syscall.EEXIST)
	}
	vs.dests[d.Addr] = &Destination{Addr: d.Addr, Weight: d.Weight}
	f.logf("add-dest %s %s weight %d", s.ServiceKey, d.Addr, d.Weight)
	return nil
}

func (f *FakeKernel) UpdateDest(s Service, d Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.destOp("UpdateDest", "update", s, d)
	if err != nil {
		return err
	}
	cur := vs.dests[d.Addr]
	if cur == nil {
		return fmt.Errorf("update %s destination %s: %w", s.ServiceKey, d.Addr, syscall.ENOENT)
	}
	cur.Weight = d.Weight // the counts are the kernel's
	f.logf("update-dest %s %s weight %d", s.ServiceKey, d.Addr, d.Weight)
	return nil
}

func (f *FakeKernel) DelDest(s Service, d Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.destOp("DelDest", "delete", s, d)
	if err != nil {
		return err
	}
	if vs.dests[d.Addr] == nil {
		return fmt.Errorf("delete %s destination %s: %w", s.ServiceKey, d.Addr, syscall.ENOENT)
	}
	delete(vs.dests, d.Addr)
	f.logf("del-dest %s %s", s.ServiceKey, d.Addr)
	return nil
}

func (f *FakeKernel) EnsureInterface() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("EnsureInterface"); err != nil {
		return err
	}
	if !f.iface {
		f.iface = true
		f.logf("create-interface %s", Interface)
	}
	return nil
}

func (f *FakeKernel) InterfaceAddrs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("InterfaceAddrs"); err != nil {
		return nil, err
	}
	return slices.SortedFunc(maps.Keys(f.addrs), netip.Addr.Compare), nil
}

func (f *FakeKernel) AddAddr(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("AddAddr"); err != nil {
		return err
	}
	if !f.iface {
		return fmt.Errorf("bind %s: interface %s does not exist", a, Interface)
	}
	if !f.addrs[a] {
		f.addrs[a] = true
		f.logf("add-addr %s", a)
	}
	return nil
}

func (f *FakeKernel) DelAddr(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("DelAddr"); err != nil {
		return err
	}
	if f.addrs[a] {
		delete(f.addrs, a)
		f.logf("del-addr %s", a)
	}
	return nil
}

func (f *FakeKernel) DeleteInterface() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("DeleteInterface"); err != nil {
		return err
	}
	if f.iface {
		f.iface = false
		clear(f.addrs)
		f.logf("delete-interface %s", Interface)
	}
	return nil
}

// Dump returns the whole state as text in a fixed order, for golden-style
// comparisons:
//
//	interface outpost0
//	  addr 10.96.0.10
//	service 10.96.0.10:80/TCP rr
//	  -> 10.244.1.1:8080 weight 1 active 0 inactive 0
func (f *FakeKernel) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	if f.iface {
		fmt.Fprintf(&b, "interface %s\n", Interface)
		for _, a := range slices.SortedFunc(maps.Keys(f.addrs), netip.Addr.Compare) {
			fmt.Fprintf(&b, "  addr %s\n", a)
		}
	}
	for _, key := range sortedKeys(f.svcs) {
		vs := f.svcs[key]
		fmt.Fprintf(&b, "service %s\n", vs.svc)
		for _, a := range slices.SortedFunc(maps.Keys(vs.dests), netip.AddrPort.Compare) {
			d := vs.dests[a]
			fmt.Fprintf(&b, "  -> %s weight %d active %d inactive %d\n", d.Addr, d.Weight, d.ActiveConns, d.InactiveConns)
		}
	}
	return b.String()
}
