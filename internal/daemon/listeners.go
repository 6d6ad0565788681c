package daemon

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Node ports that a process of this host listens on are not served
// (serve_node_ports): the rules would take the process's traffic. The
// sockets are read from /proc/net of the daemon's network namespace, which
// is the one whose addresses serve the node ports.

// procRoot is where readListeners looks; tests point it elsewhere.
var procRoot = "/proc"

// socket states of /proc/net/{tcp,udp}[6] (include/net/tcp_states.h).
const (
	stateListen = "0A" // TCP_LISTEN
	stateClose  = "07" // TCP_CLOSE: an unconnected UDP socket
)

// readListeners returns the TCP sockets in LISTEN and the unconnected UDP
// sockets bound to a port, of both families. A family whose file is
// missing (no IPv6 in this kernel) has none.
func readListeners(root string) ([]model.Listener, error) {
	var out []model.Listener
	for _, f := range []struct {
		name  string
		proto model.Protocol
		state string
	}{
		{"tcp", model.TCP, stateListen}, {"tcp6", model.TCP, stateListen},
		{"udp", model.UDP, stateClose}, {"udp6", model.UDP, stateClose},
	} {
		path := filepath.Join(root, "net", f.name)
		ls, err := readSocketFile(path, f.proto, f.state)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

func readSocketFile(path string, proto model.Protocol, state string) ([]model.Listener, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []model.Listener
	sc := bufio.NewScanner(fh)
	first := true
	for n := 1; sc.Scan(); n++ {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		if f[3] != state {
			continue
		}
		local, err := parseProcAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		if proto == model.UDP {
			// A connected UDP socket has a peer; only a bound one without
			// takes datagrams from anyone.
			if remote, err := parseProcAddr(f[2]); err != nil || remote.Port() != 0 {
				continue
			}
		}
		if local.Port() == 0 {
			continue
		}
		out = append(out, model.Listener{Protocol: proto, Addr: local})
	}
	return out, sc.Err()
}

// parseProcAddr parses "0100007F:1F90": the address as the kernel holds it
// in memory, 32 bits at a time in this host's byte order, then the port in
// hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q: want HEXADDR:HEXPORT", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %v", s, err)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port: %v", s, err)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	ip, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// refreshListeners hands the model the ports local processes listen on,
// when a cluster serves node ports; the sync loop calls it before taking
// the desired state, so that a listener refuses its node port in the same
// sync that would program it.
func (d *Daemon) refreshListeners() {
	serve := false
	d.clusters.each(func(h *clusterHandle) { serve = serve || h.cfg.ServeNodePorts })
	if !serve {
		return
	}
	ls, err := readListeners(procRoot)
	if err != nil {
		d.log.Warn("could not read this host's listening sockets; node ports they hold are not recognised until the next try", "err", err)
		return
	}
	d.store.SetLocalListeners(ls)
}
