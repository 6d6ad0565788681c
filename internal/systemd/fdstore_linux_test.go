package systemd

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestStoreFile: FDSTORE=1 with the name, and the file itself passed
// along (SCM_RIGHTS); FDSTOREREMOVE with the name alone.
func TestStoreFile(t *testing.T) {
	conn := systemdSocket(t)
	n := NewNotifier()
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := n.StoreFile("dns-udp-127.0.0.153_53", f); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 128), make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	k, ko, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:k]); got != "FDSTORE=1\nFDNAME=dns-udp-127.0.0.153_53" {
		t.Errorf("got %q", got)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:ko])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v", msgs, err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("passed fds %v, %v", fds, err)
	}
	syscall.Close(fds[0])
	if err := n.RemoveFiles("dns-udp-127.0.0.153_53"); err != nil {
		t.Fatal(err)
	}
	k, ko, _, _, err = conn.ReadMsgUnix(buf, oob)
	if err != nil || string(buf[:k]) != "FDSTOREREMOVE=1\nFDNAME=dns-udp-127.0.0.153_53" || ko != 0 {
		t.Errorf("got %q with %d bytes of control, %v", buf[:k], ko, err)
	}
}

// TestListenFilesOfAnother: files passed to another process are not ours.
func TestListenFilesOfAnother(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "2")
	if got := ListenFiles(); got != nil {
		t.Fatalf("got %v", got)
	}
	if os.Getenv("LISTEN_FDS") != "" {
		t.Error("LISTEN_FDS left set")
	}
}
