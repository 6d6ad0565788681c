//go:build !linux

package routes

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// NewKernel returns a Kernel that fails: host routes are programmed only on
// Linux. It exists so that the rest of the package (and its Fake) builds
// everywhere.
func NewKernel(*netlink.Handle) Kernel { return unsupported{} }

var errUnsupported = errors.New("routes: host routes need Linux")

type unsupported struct{}

func (unsupported) Routes(bool) ([]KernelRoute, error)     { return nil, errUnsupported }
func (unsupported) Add(KernelRoute) error                  { return errUnsupported }
func (unsupported) Replace(KernelRoute) error              { return errUnsupported }
func (unsupported) Delete(KernelRoute) error               { return errUnsupported }
func (unsupported) LocalPrefixes() ([]netip.Prefix, error) { return nil, errUnsupported }
