package daemon

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

func TestParseProcAddr(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"0200FA0A:7596", "10.250.0.2:30102"},
		{"00000000:0000", "0.0.0.0:0"},
		{"00000000000000000000000001000000:0016", "[::1]:22"},
		{"0000000000000000FFFF00000200FA0A:0035", "10.250.0.2:53"}, // ::ffff:10.250.0.2, unmapped
		{"000000FD00000000000000000200000000:0050", "error"},
	} {
		got, err := parseProcAddr(tt.in)
		if tt.want == "error" {
			if err == nil {
				t.Errorf("parseProcAddr(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

// TestReadListenersFiles: LISTEN TCP sockets and unconnected bound UDP
// sockets count; connections, connected UDP sockets and missing files
// (no IPv6) do not.
func TestReadListenersFiles(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"tcp": `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:7596 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 464 1 0 100 0 0 10 0
   1: 0100007F:8BDB 0100007F:DE0A 01 00000000:00000000 03:0000099E 00000000     0        0 0 3 0
`,
		"udp": `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0200FA0A:7597 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
  2: 0200FA0A:7598 0100FA0A:0035 01 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0
`,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(root, "net", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readListeners(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Listener{
		{Protocol: model.TCP, Addr: netip.MustParseAddrPort("0.0.0.0:30102")},
		{Protocol: model.UDP, Addr: netip.MustParseAddrPort("10.250.0.2:30103")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("readListeners = %v, want %v", got, want)
	}

	if err := os.WriteFile(filepath.Join(root, "net", "tcp6"), []byte("header\n 0: zz:1 00:0 0A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readListeners(root); err == nil {
		t.Error("a broken line was accepted")
	}
}

// TestReadListenersReal: sockets this test opens are found in the real
// /proc of its network namespace.
func TestReadListenersReal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got, err := readListeners("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []model.Listener{
		{Protocol: model.TCP, Addr: netip.MustParseAddrPort(ln.Addr().String())},
		{Protocol: model.UDP, Addr: netip.MustParseAddrPort(pc.LocalAddr().String())},
	} {
		if !slices.Contains(got, want) {
			t.Errorf("readListeners(/proc) does not have %v: %v", want, got)
		}
	}
}
