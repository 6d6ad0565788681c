// Package systemd speaks the sd_notify protocol: a datagram of KEY=VALUE
// lines to the socket in $NOTIFY_SOCKET. Small enough not to need a library.
package systemd

import (
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends state changes to systemd; without $NOTIFY_SOCKET (not run
// by systemd, or not Type=notify) every call does nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// NewNotifier reads $NOTIFY_SOCKET.
func NewNotifier() *Notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}
	}
	// A leading @ names a socket in the abstract namespace.
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// Enabled says whether systemd listens.
func (n *Notifier) Enabled() bool { return n.addr != nil }

// Notify sends one state, e.g. "READY=1" or "STATUS=syncing".
func (n *Notifier) Notify(state string) error {
	if n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// WatchdogInterval returns how often to send WATCHDOG=1 (half the
// configured WatchdogSec, as sd_watchdog_enabled advises), or 0 when no
// watchdog is set for this process.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
