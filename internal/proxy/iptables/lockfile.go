package iptables

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// DefaultLockFile is where the legacy iptables backend takes its lock;
// XTABLES_LOCKFILE moves it, for iptables and for us.
const DefaultLockFile = "/run/xtables.lock"

// LockFile is the xtables lock file iptables uses here.
func LockFile() string {
	if p := os.Getenv("XTABLES_LOCKFILE"); p != "" {
		return p
	}
	return DefaultLockFile
}

// EnsureLockFile creates the xtables lock file when it is missing. The
// legacy backend creates it at its first run, but the sandboxed daemon
// cannot: /run is read-only to it, and the unit's
// ReadWritePaths=-/run/xtables.lock skips a path that does not exist when
// the daemon starts, so on a freshly booted legacy host every restore
// would fail. The privileged prepare step runs before the sandbox is made,
// and creates it there. The nf_tables backend never reads it; an empty
// file costs nothing.
func EnsureLockFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating the xtables lock %s: %w", path, err)
	}
	return f.Close()
}
