//go:build !linux

package ipvs

import (
	"context"
	"errors"
	"net/netip"
)

// NewKernel returns a Kernel that fails: IPVS exists only on Linux.
func NewKernel() Kernel { return noKernel{} }

var errNotLinux = errors.New("IPVS needs Linux")

func moduleLoadable(context.Context) error { return errNotLinux }

type noKernel struct{}

func (noKernel) EnsureModule(context.Context) error    { return errNotLinux }
func (noKernel) SetSysctl(string, string) error        { return errNotLinux }
func (noKernel) List() ([]VirtualServer, error)        { return nil, nil }
func (noKernel) AddService(Service) error              { return errNotLinux }
func (noKernel) UpdateService(Service) error           { return errNotLinux }
func (noKernel) DelService(Service) error              { return errNotLinux }
func (noKernel) AddDest(Service, Destination) error    { return errNotLinux }
func (noKernel) UpdateDest(Service, Destination) error { return errNotLinux }
func (noKernel) DelDest(Service, Destination) error    { return errNotLinux }
func (noKernel) EnsureInterface() error                { return errNotLinux }
func (noKernel) InterfaceAddrs() ([]netip.Addr, error) { return nil, nil }
func (noKernel) AddAddr(netip.Addr) error              { return errNotLinux }
func (noKernel) DelAddr(netip.Addr) error              { return errNotLinux }
func (noKernel) DeleteInterface() error                { return nil }
