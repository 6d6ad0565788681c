package ipvs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Prepare does, with full privileges, what the sandboxed daemon may not:
// load ip_vs and the scheduler's module, set the IPVS sysctls, and keep the
// VIPs off the LAN (arpSysctls). The systemd unit runs it (kube-outpost
// prepare) as a privileged ExecStartPre, so the daemon itself needs neither
// CAP_SYS_MODULE nor a writable /proc/sys; its own SetSysctl calls then find
// the values set and write nothing.
func Prepare(ctx context.Context, k Kernel, scheduler string) error {
	return prepareHost(ctx, k, scheduler, modprobe, readProcSys)
}

// arpSysctls are the least values, host-wide, that keep the VIPs bound to
// outpost0 from being announced on the LAN; kube-proxy sets the same in
// IPVS mode with strictARP. Linux answers ARP on any interface for any of
// its addresses by default, so a neighbour asking who has a ClusterIP (or
// a LAN address that a cluster made a ClusterIP) would be told: this
// host, and would send it that address's traffic.
//
// The kernel takes the higher of conf/all and an interface's own value,
// so a stricter setting an admin made, on all or on an interface, is kept:
// a value is raised to its minimum, never lowered. IPv6 needs nothing:
// neighbour discovery answers only for addresses of the interface asked.
var arpSysctls = []struct {
	name string
	min  int
}{
	// 1: answer an ARP request only for an address of the interface it
	// came in on; outpost0 receives none.
	{"net/ipv4/conf/all/arp_ignore", 1},
	// 2: ask with the best local address of the interface for the
	// target, never with a VIP (a local connection's source may be one),
	// so that neighbours do not learn a VIP from our requests either.
	{"net/ipv4/conf/all/arp_announce", 2},
}

// prepareHost is Prepare with modprobe and the reading of a sysctl given,
// so that tests run it against a FakeKernel.
func prepareHost(ctx context.Context, k Kernel, scheduler string, modprobe func(ctx context.Context, module string) error,
	readSysctl func(name string) (string, error)) error {
	if err := k.EnsureModule(ctx); err != nil {
		return err
	}
	if scheduler == "" {
		scheduler = defaultScheduler
	}
	if err := modprobe(ctx, "ip_vs_"+scheduler); err != nil {
		return fmt.Errorf("ipvs_scheduler %q: %w", scheduler, err)
	}
	for _, s := range sysctls {
		if err := k.SetSysctl(s.name, s.value); err != nil {
			return err
		}
	}
	for _, s := range arpSysctls {
		if cur, err := readSysctl(s.name); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(cur)); err == nil && n >= s.min {
				continue
			}
		}
		if err := k.SetSysctl(s.name, strconv.Itoa(s.min)); err != nil {
			return err
		}
	}
	return nil
}

func modprobe(ctx context.Context, module string) error {
	if out, err := exec.CommandContext(ctx, "modprobe", module).CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe %s: %w: %s", module, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func readProcSys(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	return string(b), err
}
