//go:build !linux

package cluster

import (
	"syscall"
	"time"
)

// setUserTimeout does nothing: TCP_USER_TIMEOUT is Linux's. Keepalive
// alone notices a dead peer elsewhere.
func setUserTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
