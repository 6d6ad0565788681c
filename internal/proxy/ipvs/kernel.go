package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Interface is the dummy interface that holds the ClusterIPs. Binding a
// ClusterIP to it makes the address local, which is what IPVS needs to
// receive the packets (kube-proxy does the same with kube-ipvs0). The
// addresses on it are also how we recognise our virtual servers: a virtual
// server is ours exactly when its address is on this interface.
const Interface = "outpost0"

// Kernel is the lowest layer: IPVS, the dummy interface, modules and
// sysctls. The real one is NewKernel; tests use FakeKernel, so that the
// whole Proxier above runs for real.
//
// Calls on one Kernel must come from one network namespace: sockets are
// opened in the namespace of the calling thread.
type Kernel interface {
	// EnsureModule makes sure ip_vs is loaded, loading it if needed; it
	// returns a *ModuleMissingError when that is impossible.
	EnsureModule(ctx context.Context) error
	// SetSysctl sets /proc/sys/<name>, e.g. "net/ipv4/vs/conntrack", and
	// does not write when the value is already right.
	SetSysctl(name, value string) error

	// List returns every virtual server with its destinations. Without
	// ip_vs loaded there are none, and List neither fails nor loads it.
	List() ([]VirtualServer, error)
	AddService(s Service) error
	UpdateService(s Service) error
	DelService(s Service) error
	AddDest(s Service, d Destination) error
	UpdateDest(s Service, d Destination) error
	DelDest(s Service, d Destination) error

	// EnsureInterface creates Interface if it does not exist.
	EnsureInterface() error
	// InterfaceAddrs returns the addresses on Interface, of both families;
	// none when it does not exist.
	InterfaceAddrs() ([]netip.Addr, error)
	// AddAddr binds an address to Interface (host scope, full-length
	// prefix); binding a bound address is no error.
	AddAddr(a netip.Addr) error
	// DelAddr unbinds an address; unbinding an absent one is no error.
	DelAddr(a netip.Addr) error
	// DeleteInterface deletes Interface, if it exists.
	DeleteInterface() error
}

// ServiceKey identifies a virtual server.
type ServiceKey struct {
	VIP      netip.Addr
	Port     uint16
	Protocol model.Protocol
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.VIP, k.Port), k.Protocol)
}

func (k ServiceKey) compare(o ServiceKey) int {
	if c := k.VIP.Compare(o.VIP); c != 0 {
		return c
	}
	if k.Port != o.Port {
		if k.Port < o.Port {
			return -1
		}
		return 1
	}
	return strings.Compare(string(k.Protocol), string(o.Protocol))
}

// Service is an IPVS virtual server, as far as we program it: always the
// masquerading (NAT) forwarding method, never a firewall mark.
type Service struct {
	ServiceKey
	Scheduler string
	// Persistent sends a client to the same destination for Timeout
	// seconds after its last connection ends (ClientIP affinity).
	Persistent bool
	Timeout    uint32
}

// sameConfig reports whether two services are programmed the same way.
func (s Service) sameConfig(o Service) bool {
	if s.Scheduler != o.Scheduler || s.Persistent != o.Persistent {
		return false
	}
	return !s.Persistent || s.Timeout == o.Timeout
}

func (s Service) String() string {
	str := s.ServiceKey.String() + " " + s.Scheduler
	if s.Persistent {
		str += fmt.Sprintf(" persistent %d", s.Timeout)
	}
	return str
}

// Destination is a real server of a virtual server. The connection counts
// are read only: IPVS keeps them. The JSON is explain's.
type Destination struct {
	Addr          netip.AddrPort `json:"addr"`
	Weight        int            `json:"weight"`
	ActiveConns   int            `json:"active_conns"`
	InactiveConns int            `json:"inactive_conns"`
}

// VirtualServer is a Service with its destinations, as List returns it.
type VirtualServer struct {
	Service
	Destinations []Destination
}

// ModuleMissingError says a kernel module this mode needs cannot be loaded.
type ModuleMissingError struct {
	Module string
	// Release is the running kernel's release (uname -r), to name the
	// package to install; may be empty.
	Release string
	Err     error
}

func (e *ModuleMissingError) Error() string {
	rel := e.Release
	if rel == "" {
		rel = "$(uname -r)"
	}
	return fmt.Sprintf("kernel module %s is missing (%v): install the package with this kernel's modules that provides %s "+
		"(Debian: linux-image-%s; Ubuntu: linux-modules-%s or linux-modules-extra-%s), or use mode \"iptables\"",
		e.Module, e.Err, e.Module, rel, rel, rel)
}

func (e *ModuleMissingError) Unwrap() error { return e.Err }
