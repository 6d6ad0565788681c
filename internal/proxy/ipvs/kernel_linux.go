//go:build linux

package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	mobyipvs "github.com/moby/ipvs"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// procIPVS exists once ip_vs is loaded, in every network namespace.
const procIPVS = "/proc/net/ip_vs"

// svcFlagPersistent is IP_VS_SVC_F_PERSISTENT (include/uapi/linux/ip_vs.h).
// Listed services also carry IP_VS_SVC_F_HASHED, which the kernel sets on
// every service it holds: only this bit is compared.
const svcFlagPersistent = 0x1

// kernel is the real Kernel: IPVS through moby/ipvs, the interface through
// netlink, sysctls through /proc/sys.
type kernel struct {
	mu   sync.Mutex
	ipvs *mobyipvs.Handle // opened on first use, once ip_vs is loaded
}

// quietMobyIPVS lowers logrus (used by moby/ipvs alone) to errors, once.
var quietMobyIPVS sync.Once

// NewKernel returns the real Kernel. Nothing is opened before first use.
func NewKernel() Kernel { return &kernel{} }

var errNoIPVS = errors.New("ip_vs is not loaded")

func moduleLoaded() bool {
	_, err := os.Stat(procIPVS)
	return err == nil
}

// moduleLoadable says whether ip_vs is loaded or modprobe finds it, without
// loading it (mode = "auto" only looks).
func moduleLoadable(ctx context.Context) error {
	if moduleLoaded() {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "modprobe", "--dry-run", "--quiet", "ip_vs").CombinedOutput(); err != nil {
		return fmt.Errorf("ip_vs is not loaded and modprobe does not find it: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (k *kernel) EnsureModule(ctx context.Context) error {
	if moduleLoaded() {
		return nil
	}
	out, err := exec.CommandContext(ctx, "modprobe", "ip_vs").CombinedOutput()
	switch {
	case err != nil:
		err = fmt.Errorf("%s does not exist and modprobe ip_vs failed: %w: %s", procIPVS, err, strings.TrimSpace(string(out)))
	case !moduleLoaded():
		err = fmt.Errorf("modprobe ip_vs succeeded but %s does not exist", procIPVS)
	default:
		return nil
	}
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return &ModuleMissingError{Module: "ip_vs", Release: strings.TrimSpace(string(rel)), Err: err}
}

func (k *kernel) SetSysctl(name, value string) error {
	path := filepath.Join("/proc/sys", name)
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// handle returns the IPVS netlink handle. It is never opened before ip_vs
// is loaded: moby/ipvs looks up the IPVS netlink family once per process,
// and a failed lookup would stick.
func (k *kernel) handle() (*mobyipvs.Handle, error) {
	if k.ipvs != nil {
		return k.ipvs, nil
	}
	if !moduleLoaded() {
		return nil, errNoIPVS
	}
	quietMobyIPVS.Do(func() {
		// moby/ipvs logs through logrus, and warns on first use that its
		// own modprobe failed: in the sandbox it cannot, and need not (the
		// unit's prepare step loaded ip_vs). Our errors say what matters.
		logrus.SetLevel(logrus.ErrorLevel)
	})
	h, err := mobyipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink socket: %w", err)
	}
	k.ipvs = h
	return h, nil
}

func (k *kernel) List() ([]VirtualServer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, err := k.handle()
	if errors.Is(err, errNoIPVS) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	out := make([]VirtualServer, 0, len(svcs))
	for _, s := range svcs {
		svc, ok := fromIPVSService(s)
		if !ok {
			continue // a firewall-mark service or a protocol we never use: not ours
		}
		dests, err := h.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("list destinations of %s: %w", svc.ServiceKey, err)
		}
		vs := VirtualServer{Service: svc}
		for _, d := range dests {
			ip, ok := netip.AddrFromSlice(d.Address)
			if !ok {
				continue
			}
			vs.Destinations = append(vs.Destinations, Destination{
				Addr:          netip.AddrPortFrom(ip.Unmap(), d.Port),
				Weight:        d.Weight,
				ActiveConns:   d.ActiveConnections,
				InactiveConns: d.InactiveConnections,
			})
		}
		out = append(out, vs)
	}
	return out, nil
}

func (k *kernel) do(op string, s Service, d *Destination, fn func(h *mobyipvs.Handle, s *mobyipvs.Service, d *mobyipvs.Destination) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, err := k.handle()
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, s.ServiceKey, err)
	}
	var md *mobyipvs.Destination
	if d != nil {
		md = toIPVSDest(*d)
	}
	if err := fn(h, toIPVSService(s), md); err != nil {
		what := s.String()
		if d != nil {
			what = fmt.Sprintf("%s destination %s", s.ServiceKey, d.Addr)
		}
		err = fmt.Errorf("%s %s: %w", op, what, err)
		if op == "add virtual server" && errors.Is(err, unix.ENOENT) {
			// The kernel loads the scheduler module on demand; ENOENT
			// means it has none by that name.
			err = fmt.Errorf("%w (is there a kernel module ip_vs_%s for scheduler %q?)", err, s.Scheduler, s.Scheduler)
		}
		return err
	}
	return nil
}

func (k *kernel) AddService(s Service) error {
	return k.do("add virtual server", s, nil, func(h *mobyipvs.Handle, s *mobyipvs.Service, _ *mobyipvs.Destination) error {
		return h.NewService(s)
	})
}

func (k *kernel) UpdateService(s Service) error {
	return k.do("update virtual server", s, nil, func(h *mobyipvs.Handle, s *mobyipvs.Service, _ *mobyipvs.Destination) error {
		return h.UpdateService(s)
	})
}

func (k *kernel) DelService(s Service) error {
	return k.do("delete virtual server", s, nil, func(h *mobyipvs.Handle, s *mobyipvs.Service, _ *mobyipvs.Destination) error {
		return h.DelService(s)
	})
}

func (k *kernel) AddDest(s Service, d Destination) error {
	return k.do("add", s, &d, func(h *mobyipvs.Handle, s *mobyipvs.Service, d *mobyipvs.Destination) error {
		return h.NewDestination(s, d)
	})
}

func (k *kernel) UpdateDest(s Service, d Destination) error {
	return k.do("update", s, &d, func(h *mobyipvs.Handle, s *mobyipvs.Service, d *mobyipvs.Destination) error {
		return h.UpdateDestination(s, d)
	})
}

func (k *kernel) DelDest(s Service, d Destination) error {
	return k.do("delete", s, &d, func(h *mobyipvs.Handle, s *mobyipvs.Service, d *mobyipvs.Destination) error {
		return h.DelDestination(s, d)
	})
}

func ipProto(p model.Protocol) uint16 {
	if n, ok := p.IPNumber(); ok {
		return uint16(n)
	}
	return unix.IPPROTO_TCP
}

func toIPVSService(s Service) *mobyipvs.Service {
	ms := &mobyipvs.Service{
		Address:   s.VIP.AsSlice(),
		Protocol:  ipProto(s.Protocol),
		Port:      s.Port,
		SchedName: s.Scheduler,
	}
	// The netmask groups clients for persistence: one per address, as
	// kube-proxy does. IPv4 takes a mask, IPv6 a prefix length.
	if s.VIP.Is4() {
		ms.AddressFamily, ms.Netmask = unix.AF_INET, 0xffffffff
	} else {
		ms.AddressFamily, ms.Netmask = unix.AF_INET6, 128
	}
	if s.Persistent {
		ms.Flags, ms.Timeout = svcFlagPersistent, s.Timeout
	}
	return ms
}

// fromIPVSService converts what the kernel lists; ok is false for services
// we would never have made.
func fromIPVSService(ms *mobyipvs.Service) (Service, bool) {
	if ms.FWMark != 0 || ms.Address == nil {
		return Service{}, false
	}
	ip, ok := netip.AddrFromSlice(ms.Address)
	if !ok {
		return Service{}, false
	}
	var p model.Protocol
	switch ms.Protocol {
	case unix.IPPROTO_TCP:
		p = model.TCP
	case unix.IPPROTO_UDP:
		p = model.UDP
	case unix.IPPROTO_SCTP:
		p = model.SCTP
	default:
		return Service{}, false
	}
	s := Service{ServiceKey: ServiceKey{VIP: ip.Unmap(), Port: ms.Port, Protocol: p}, Scheduler: ms.SchedName}
	if ms.Flags&svcFlagPersistent != 0 {
		s.Persistent, s.Timeout = true, ms.Timeout
	}
	return s, true
}

func toIPVSDest(d Destination) *mobyipvs.Destination {
	md := &mobyipvs.Destination{
		Address:         d.Addr.Addr().AsSlice(),
		Port:            d.Addr.Port(),
		Weight:          d.Weight,
		ConnectionFlags: mobyipvs.ConnectionFlagMasq,
	}
	if d.Addr.Addr().Is4() {
		md.AddressFamily = unix.AF_INET
	} else {
		md.AddressFamily = unix.AF_INET6
	}
	return md
}

// link returns Interface, or nil when it does not exist.
func link() (netlink.Link, error) {
	l, err := netlink.LinkByName(Interface)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up interface %s: %w", Interface, err)
	}
	return l, nil
}

// EnsureInterface creates a dummy interface and leaves it down, as
// kube-proxy leaves kube-ipvs0: the kernel adds the local route of an IPv4
// address whatever the link state, and a down link never answers as a
// route for anything else.
func (k *kernel) EnsureInterface() error {
	l, err := link()
	if err != nil {
		return err
	}
	if l != nil {
		if l.Type() != "dummy" {
			return fmt.Errorf("interface %s exists but is a %s interface, not the dummy interface kube-outpost makes: rename or delete it", Interface, l.Type())
		}
		return nil
	}
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: Interface}}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create dummy interface %s: %w", Interface, err)
	}
	return nil
}

func (k *kernel) InterfaceAddrs() ([]netip.Addr, error) {
	l, err := link()
	if err != nil || l == nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", Interface, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// hostAddr is a in the form we bind it: full-length prefix, so that it
// adds no subnet route, and host scope, so that the kernel never picks an
// IPv4 ClusterIP as the source address of traffic to anywhere else. (Linux
// ignores the requested scope of an IPv6 address: it derives it from the
// address, so IPv6 ClusterIPs get global scope.)
func hostAddr(a netip.Addr) *netlink.Addr {
	bits := a.BitLen()
	na := &netlink.Addr{
		IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Scope: int(netlink.SCOPE_HOST),
	}
	if a.Is6() {
		// No duplicate address detection: the address must be usable at
		// once, and nobody else can have it on a dummy link.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

func (k *kernel) AddAddr(a netip.Addr) error {
	l, err := link()
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("bind %s: interface %s does not exist", a, Interface)
	}
	if err := netlink.AddrAdd(l, hostAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("bind %s to %s: %w", a, Interface, err)
	}
	return nil
}

func (k *kernel) DelAddr(a netip.Addr) error {
	l, err := link()
	if err != nil || l == nil {
		return err
	}
	if err := netlink.AddrDel(l, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("unbind %s from %s: %w", a, Interface, err)
	}
	return nil
}

func (k *kernel) DeleteInterface() error {
	l, err := link()
	if err != nil || l == nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete interface %s: %w", Interface, err)
	}
	return nil
}
