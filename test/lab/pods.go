//go:build linux

package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Pod is a backend: a namespace on the pods bridge whose servers run as
// goroutines of the test process.
type Pod struct {
	Name string
	IP   netip.Addr
	// IPv6 is fd00:244::X:Y for IP 10.244.X.Y in a lab with IPv6 (some
	// cluster has a ServiceCIDRv6); invalid (zero) otherwise.
	IPv6 netip.Addr
}

type podState struct {
	pod      *Pod
	ns       string
	veth     string // bridge-side end, in the pods bridge
	bridgeNS string // the router's namespace, or the node's the pod is behind
	closers  []io.Closer
	wg       sync.WaitGroup
}

// stop closes the servers and waits for their goroutines.
func (p *podState) stop() {
	for _, c := range p.closers {
		c.Close()
	}
	p.wg.Wait()
}

// podAddr returns the k-th pod address (k >= 1): 10.244.1.1, ... upwards through
// the /16, leaving 10.244.0.0/24 to the router.
func podAddr(k int) (netip.Addr, error) {
	base := podNet.Addr().As4()
	n := binary.BigEndian.Uint32(base[:]) + 256 + uint32(k)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	a := netip.AddrFrom4(b)
	if !podNet.Contains(a) || a == netip.MustParseAddr("10.244.255.255") {
		return netip.Addr{}, errors.New("lab: pod addresses exhausted")
	}
	return a, nil
}

// podAddr6 returns the IPv6 address of the pod with IPv4 address 10.244.X.Y:
// fd00:244::X:Y, which cannot collide with the router's fd00:244::1 (X >= 1).
func podAddr6(ip netip.Addr) netip.Addr {
	a4 := ip.As4()
	b := podNet6.Addr().As16()
	b[13], b[15] = a4[2], a4[3]
	return netip.AddrFrom16(b)
}

// AddPod creates namespace <ID>-pod-<name> with the next pod address and serves,
// on every tcpPort, HTTP answering any request with "<name>\n" (headers X-Pod:
// <name> and X-Remote-Addr: the client address as the pod sees it), and on every
// udpPort a responder answering each datagram with "<name>\n". In a lab with
// IPv6 the pod also gets Pod.IPv6, and its servers answer on both families.
func (l *Lab) AddPod(ctx context.Context, name string, tcpPorts, udpPorts []int) (_ *Pod, err error) {
	if l.remote != "" {
		if !nameRE.MatchString(name) {
			return nil, fmt.Errorf("lab: pod name %q: want [a-z0-9-], at most 40 characters", name)
		}
		return l.addRemotePod(ctx, name, tcpPorts, udpPorts)
	}
	return l.addPod(ctx, name, nil, tcpPorts, udpPorts)
}

// addPod adds a pod on the router's pods bridge, or behind node n.
func (l *Lab) addPod(ctx context.Context, name string, n *Node, tcpPorts, udpPorts []int) (_ *Pod, err error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: pod name %q: want [a-z0-9-], at most 40 characters", name)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	if _, ok := l.pods[name]; ok {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: pod %s exists", name)
	}
	l.podSeq++
	k := l.podSeq
	// On the router's bridge: the k-th address of the pod network, the
	// router as gateway. Behind a node: the next address of its subnet.
	bridgeNS, bits, gw := l.routerNS, podNet.Bits(), routerPods
	var ip netip.Addr
	if n != nil {
		bridgeNS, bits, gw = n.NS, n.PodCIDR.Bits(), n.PodCIDR.Addr().Next()
		n.pods++
		if ip, err = nthAddr(n.PodCIDR, n.pods+1); err != nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("lab: node %s: %w", n.Name, err)
		}
	} else if ip, err = podAddr(k); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	p := &podState{pod: &Pod{Name: name, IP: ip}, ns: l.ID + "-pod-" + name, veth: fmt.Sprintf("vp%d", k), bridgeNS: bridgeNS}
	tcpNet, udpNet := "tcp4", "udp4"
	if l.ipv6 && n == nil {
		p.pod.IPv6 = podAddr6(ip)
		tcpNet, udpNet = "tcp", "udp" // dual-stack sockets
	}
	// A nil entry reserves the name while the namespace is set up; the pod is
	// published (and visible to RemovePod and Close) only once complete.
	l.pods[name] = nil
	l.mu.Unlock()

	defer func() {
		if err != nil {
			p.stop()
			_ = deleteNetns(p.ns)
			l.mu.Lock()
			if l.pods != nil {
				delete(l.pods, name)
			}
			l.mu.Unlock()
		}
	}()

	if err := l.addNetns(p.ns); err != nil {
		return nil, err
	}
	if err := vethInto(bridgeNS, "pods", p.veth, p.ns); err != nil {
		return nil, err
	}
	if err := ipIn(p.ns, "addr", "add", fmt.Sprintf("%s/%d", ip, bits), "dev", "eth0"); err != nil {
		return nil, err
	}
	// A route back to the infra network, deliberately not a default route: no
	// lab namespace may have one.
	if err := ipIn(p.ns, "route", "add", infraNet.String(), "via", gw.String()); err != nil {
		return nil, err
	}
	if l.ipv6 && n == nil {
		if err := ipIn(p.ns, "addr", "add", p.pod.IPv6.String()+"/64", "dev", "eth0", "nodad"); err != nil {
			return nil, err
		}
		if err := ipIn(p.ns, "route", "add", infraNet6.String(), "via", routerPods6.String()); err != nil {
			return nil, err
		}
	}

	for _, port := range tcpPorts {
		ln, err := listenIn(p.ns, tcpNet, fmt.Sprintf(":%d", port))
		if err != nil {
			return nil, fmt.Errorf("pod %s: listen tcp %d: %w", name, port, err)
		}
		srv := &http.Server{Handler: podHandler(name), ReadHeaderTimeout: 10 * time.Second}
		p.closers = append(p.closers, srv, ln)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_ = srv.Serve(ln) // returns when Close closes the listener
		}()
	}
	for _, port := range udpPorts {
		pc, err := listenPacketIn(p.ns, udpNet, fmt.Sprintf(":%d", port))
		if err != nil {
			return nil, fmt.Errorf("pod %s: listen udp %d: %w", name, port, err)
		}
		p.closers = append(p.closers, pc)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			serveUDP(pc, []byte(name+"\n"))
		}()
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab is closed")
	}
	l.pods[name] = p
	if l.ipv6 {
		l.logf("pod %s at %s and %s (tcp %v, udp %v)", name, ip, p.pod.IPv6, tcpPorts, udpPorts)
	} else {
		l.logf("pod %s at %s (tcp %v, udp %v)", name, ip, tcpPorts, udpPorts)
	}
	return p.pod, nil
}

func podHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pod", name)
		w.Header().Set("X-Remote-Addr", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s\n", name)
	})
}

func serveUDP(pc net.PacketConn, answer []byte) {
	buf := make([]byte, 64*1024)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP-induced errors; keep serving
		}
		_, _ = pc.WriteTo(answer, addr)
	}
}

// RemovePod stops the pod's servers and deletes its namespace (and with it the
// veth into the pods bridge).
func (l *Lab) RemovePod(name string) error {
	if l.remote != "" {
		_, err := l.control(context.Background(), "/pods/"+name+"/remove")
		return err
	}
	l.mu.Lock()
	p := l.pods[name]
	if p != nil {
		delete(l.pods, name)
	}
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("lab: no pod %s", name)
	}
	p.stop()
	// The kernel dismantles a deleted namespace asynchronously; until then its
	// interfaces still answer (a SYN would get a RST from the old pod). Deleting
	// the veth first makes the pod vanish from the network right now, like a
	// real pod whose sandbox is gone.
	err := ipIn(p.bridgeNS, "link", "del", p.veth)
	return errors.Join(err, deleteNetns(p.ns))
}
