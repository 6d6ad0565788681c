package ipvs

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Prepare does, with full privileges, what the sandboxed daemon may not:
// load ip_vs and the scheduler's module, and set the IPVS sysctls. The
// systemd unit runs it (kube-outpost prepare) as a privileged
// ExecStartPre, so the daemon itself needs neither CAP_SYS_MODULE nor a
// writable /proc/sys; its own SetSysctl calls then find the values set and
// write nothing.
func Prepare(ctx context.Context, k Kernel, scheduler string) error {
	if err := k.EnsureModule(ctx); err != nil {
		return err
	}
	if scheduler == "" {
		scheduler = defaultScheduler
	}
	mod := "ip_vs_" + scheduler
	if out, err := exec.CommandContext(ctx, "modprobe", mod).CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe %s (ipvs_scheduler %q): %w: %s", mod, scheduler, err, strings.TrimSpace(string(out)))
	}
	for _, s := range sysctls {
		if err := k.SetSysctl(s.name, s.value); err != nil {
			return err
		}
	}
	return nil
}
