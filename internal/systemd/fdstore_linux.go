package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// StoreFile keeps a dup of f in systemd's file descriptor store under
// name (FDSTORE=1, FDNAME=): systemd hands it back at the service's next
// start as long as the service is running or has a job queued (systemctl
// restart, Restart=, an upgrade's try-restart), and closes it once the
// service is stopped. The unit needs FileDescriptorStoreMax=. A name
// stored again replaces nothing: Remove the old one first.
func (n *Notifier) StoreFile(name string, f *os.File) error {
	return n.send(fmt.Sprintf("FDSTORE=1\nFDNAME=%s", name), f)
}

// RemoveFiles has systemd close what it keeps under name.
func (n *Notifier) RemoveFiles(name string) error {
	return n.send(fmt.Sprintf("FDSTOREREMOVE=1\nFDNAME=%s", name), nil)
}

// send is Notify with a file passed along. Not through a net.UnixConn: Go
// refuses control messages on a connected datagram socket.
func (n *Notifier) send(state string, f *os.File) error {
	if n.addr == nil {
		return nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrUnix{Name: n.addr.Name}
	if f == nil {
		return unix.Sendmsg(fd, []byte(state), nil, to, 0)
	}
	// Not f.Fd(): it would put the socket, shared with the server that
	// reads it, into blocking mode.
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(ffd uintptr) {
		serr = unix.Sendmsg(fd, []byte(state), unix.UnixRights(int(ffd)), to, 0)
	}); err != nil {
		return err
	}
	return serr
}

// ListenFiles are the files systemd passed to this process
// ($LISTEN_FDS, sd_listen_fds), by the name each was stored under
// ($LISTEN_FDNAMES), close-on-exec so that no child inherits them. The
// variables are unset, as sd_listen_fds(1) does. None when they are not
// this process's.
func ListenFiles() map[string][]*os.File {
	defer func() {
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			os.Unsetenv(v)
		}
	}()
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	out := map[string][]*os.File{}
	for i := range n {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		name := "unknown"
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		out[name] = append(out[name], os.NewFile(uintptr(fd), name))
	}
	return out
}
