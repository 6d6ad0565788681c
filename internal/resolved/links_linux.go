package resolved

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkAlias marks the dummy link as ours (ip link shows it as "alias"): a
// link of the same name without it was made by someone else, and is left
// alone.
const linkAlias = "kube-outpost: systemd-resolved registration of its DNS server"

// Kernel is the Links of this host's network namespace.
type Kernel struct{}

var _ Links = Kernel{}

func (Kernel) Ensure(name string, addrs []netip.Addr) (int, error) {
	l, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		err = netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
		if err != nil {
			return 0, fmt.Errorf("creating it: %w", err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return 0, err
		}
		// The kernel ignores an alias given at creation.
		if err := netlink.LinkSetAlias(l, linkAlias); err != nil {
			return 0, fmt.Errorf("marking it as ours: %w", err)
		}
		l, err = netlink.LinkByName(name)
	}
	if err != nil {
		return 0, err
	}
	if !ours(l) {
		return 0, fmt.Errorf("a link of that name exists that kube-outpost did not make (type %s, alias %q): rename or remove it", l.Type(), l.Attrs().Alias)
	}
	have, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("reading its addresses: %w", err)
	}
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP)
		if ones, _ := a.Mask.Size(); ones == 32 && slices.Contains(addrs, ip.Unmap()) {
			continue
		}
		if err := netlink.AddrDel(l, &a); err != nil {
			return 0, fmt.Errorf("removing address %s: %w", a.IPNet, err)
		}
	}
	for _, a := range addrs {
		// Site scope: resolved takes a link with only host- or
		// link-scope addresses for one it cannot send queries on,
		// while the kernel picks a source address for ordinary
		// traffic only among global ones.
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: unix.RT_SCOPE_SITE}
		if err := netlink.AddrReplace(l, addr); err != nil {
			return 0, fmt.Errorf("adding address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return 0, fmt.Errorf("setting it up: %w", err)
	}
	return l.Attrs().Index, nil
}

func (Kernel) Index(name string) (int, bool, error) {
	l, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if !ours(l) {
		return 0, false, nil
	}
	return l.Attrs().Index, true, nil
}

func (Kernel) Delete(name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return err
	}
	if !ours(l) {
		return nil
	}
	return netlink.LinkDel(l)
}

func ours(l netlink.Link) bool {
	return l.Type() == "dummy" && l.Attrs().Alias == linkAlias
}

// Prepare loads the dummy module, when it is not loaded yet, without the
// dummy0 it makes by default: the kernel would load it at the link's
// creation anyway, and that stray link would stay on the host (and in
// `resolvectl status`) after cleanup. It needs CAP_SYS_MODULE: `kube-outpost
// prepare` runs it before the sandbox. Without modprobe, or with the module
// built in, there is nothing to do.
func Prepare(ctx context.Context) error {
	if _, err := os.Stat("/sys/module/dummy"); err == nil {
		return nil
	}
	if _, err := exec.LookPath("modprobe"); err != nil {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "modprobe", "dummy", "numdummies=0").CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe dummy numdummies=0: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
