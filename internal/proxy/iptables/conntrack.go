package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// Conntrack forgets UDP flows to endpoints that left. TCP needs nothing: a
// connection to a gone endpoint fails on its own. A UDP "flow" has no end,
// so without this a client that keeps its source port (a resolver, a
// syslog sender) would keep sending to a dead endpoint for as long as it
// keeps talking.
type Conntrack interface {
	ClearUDP(ctx context.Context, vip netip.AddrPort, ep netip.AddrPort) error
}

// execConntrack uses the conntrack tool (conntrack-tools).
type execConntrack struct{}

// NewConntrack returns the conntrack-tools implementation, or an error when
// the tool is missing.
func NewConntrack() (Conntrack, error) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		return nil, fmt.Errorf("conntrack not found (install the conntrack package): %w", err)
	}
	return execConntrack{}, nil
}

func (execConntrack) ClearUDP(ctx context.Context, vip, ep netip.AddrPort) error {
	family := "ipv4"
	if vip.Addr().Is6() {
		family = "ipv6"
	}
	cmd := exec.CommandContext(ctx, "conntrack", "-D", "-f", family, "-p", "udp",
		"--orig-dst", vip.Addr().String(), "--orig-port-dst", strconv.Itoa(int(vip.Port())),
		"--reply-src", ep.Addr().String(), "--reply-port-src", strconv.Itoa(int(ep.Port())))
	out, err := cmd.CombinedOutput()
	// Exit status 1 with "0 flow entries" just means there was nothing to
	// forget.
	if err != nil && !strings.Contains(string(out), "0 flow entries") {
		return fmt.Errorf("conntrack -D %s -> %s: %v: %s", vip, ep, err, strings.TrimSpace(string(out)))
	}
	return nil
}
