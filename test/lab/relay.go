//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// Relay is a TCP relay in front of a cluster's apiserver that a test breaks
// as networks break. It passes bytes, TLS and HTTP/2 included, untouched,
// until it is told to:
//
//   - Freeze: every open connection stops passing bytes, both ways, and
//     nothing is closed, as behind a NAT or a load balancer that lost its
//     state without a word. New connections still pass.
//   - Refuse: every connection is closed and new ones are refused, as when
//     the apiserver is down.
//   - Resume: frozen connections pass bytes again, and new ones are
//     accepted again.
//
// It counts the bytes it passes each way (Bytes): the TCP payload of the
// client's connections, i.e. TLS records, HTTP/2 frames and whatever the
// apiserver compressed, as they leave the apiserver's socket.
type Relay struct {
	// Kubeconfig is a copy of the cluster's Kubeconfig whose server is
	// the relay (https://127.0.0.1:<port> in the host namespace; the
	// apiserver's certificate is valid for 127.0.0.1).
	Kubeconfig string
	Addr       string

	target string
	listen func(addr string) (net.Listener, error)
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	logf   func(format string, args ...any)

	// toClient and toServer count the bytes passed each way.
	toClient, toServer atomic.Int64

	mu     sync.Mutex
	ln     net.Listener // nil while refusing
	pairs  map[*pair]struct{}
	closed bool
}

// pair is one relayed connection.
type pair struct {
	client, server net.Conn
	mu             sync.Mutex
	// flowing is closed while bytes pass; Freeze replaces it with an
	// open one.
	flowing chan struct{}
}

// Relay starts a relay in front of the cluster's apiserver, in the lab's
// host namespace. Lab.Close stops it.
func (c *Cluster) Relay() (*Relay, error) {
	if c.lab.remote != "" {
		return nil, errors.New("lab: a remote lab's apiservers are not the lab's to stand in front of")
	}
	r, err := newRelay(strings.TrimPrefix(c.url(), "https://"), c.lab.ListenHost, c.lab.DialHost, c.logf)
	if err != nil {
		return nil, err
	}
	if err := c.lab.track(r); err != nil {
		r.Close()
		return nil, err
	}
	if r.Kubeconfig, err = r.KubeconfigFor(c.Kubeconfig, filepath.Join(c.dir, "relay-"+strings.ReplaceAll(r.Addr, ":", "-")+".kubeconfig")); err != nil {
		return nil, err
	}
	return r, nil
}

// RelayIn starts a relay in front of the cluster's apiserver that listens
// on the loopback of network namespace ns and dials from the lab's host
// namespace: a client in ns reaches the apiserver through it without any
// route of its own, and everything it exchanges with the apiserver is
// counted. Lab.Close stops it. Its Kubeconfig is empty: KubeconfigFor
// writes one for each client's credentials.
func (c *Cluster) RelayIn(ns string) (*Relay, error) {
	if c.lab.remote != "" {
		return nil, errors.New("lab: a remote lab's apiservers are not the lab's to stand in front of")
	}
	listen := func(addr string) (net.Listener, error) { return listenIn(ns, "tcp", addr) }
	r, err := newRelay(strings.TrimPrefix(c.url(), "https://"), listen, c.lab.DialHost, func(string, ...any) {})
	if err != nil {
		return nil, err
	}
	if err := c.lab.track(r); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// KubeconfigFor writes to dst a copy of the kubeconfig src whose server is
// the relay (the apiserver's certificate is valid for 127.0.0.1), and
// returns dst.
func (r *Relay) KubeconfigFor(src, dst string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		return "", err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = "https://" + r.Addr
	}
	if err := clientcmd.WriteToFile(*cfg, dst); err != nil {
		return "", err
	}
	return dst, os.Chmod(dst, 0o600)
}

// Bytes returns the bytes passed so far from the apiserver to its clients
// and from the clients to the apiserver.
func (r *Relay) Bytes() (toClient, toServer int64) {
	return r.toClient.Load(), r.toServer.Load()
}

// newRelay relays connections to target on a loopback port that listen
// opens, dialing target with dial.
func newRelay(target string, listen func(string) (net.Listener, error),
	dial func(context.Context, string, string) (net.Conn, error), logf func(string, ...any)) (*Relay, error) {
	ln, err := listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{Addr: ln.Addr().String(), target: target, listen: listen, dial: dial, logf: logf, ln: ln, pairs: map[*pair]struct{}{}}
	go r.accept(ln)
	logf("relay at %s to %s", r.Addr, target)
	return r, nil
}

func (r *Relay) accept(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		go r.relay(client)
	}
}

func (r *Relay) relay(client net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	server, err := r.dial(ctx, "tcp", r.target)
	if err != nil {
		client.Close()
		return
	}
	p := &pair{client: client, server: server, flowing: make(chan struct{})}
	close(p.flowing)
	r.mu.Lock()
	if r.closed || r.ln == nil {
		r.mu.Unlock()
		p.close()
		return
	}
	r.pairs[p] = struct{}{}
	r.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pump(server, client, &r.toServer); done <- struct{}{} }()
	go func() { p.pump(client, server, &r.toClient); done <- struct{}{} }()
	<-done
	p.close()
	<-done
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
}

// pump copies from src to dst, holding what it read while the pair is
// frozen, and adds what it wrote to count.
func (p *pair) pump(dst, src net.Conn, count *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			flowing := p.flowing
			p.mu.Unlock()
			<-flowing
			// Counted before the write, so that whoever reads these
			// bytes finds them counted already.
			count.Add(int64(n))
			if w, werr := dst.Write(buf[:n]); werr != nil {
				count.Add(int64(w - n))
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// close closes both ends, and lets a frozen pump see that they are.
func (p *pair) close() {
	p.client.Close()
	p.server.Close()
	p.thaw()
}

func (p *pair) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		p.flowing = make(chan struct{})
	default:
	}
}

func (p *pair) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
}

// Freeze stops every open connection, both ways, without closing it; new
// connections still pass.
func (r *Relay) Freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.pairs {
		p.freeze()
	}
	r.logf("relay %s: %d connections frozen", r.Addr, len(r.pairs))
}

// Refuse closes every connection and refuses new ones until Resume.
func (r *Relay) Refuse() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		return nil
	}
	err := r.ln.Close()
	r.ln = nil
	for p := range r.pairs {
		p.close()
	}
	r.logf("relay %s: refusing", r.Addr)
	return err
}

// Resume lets frozen connections flow again and accepts new ones again,
// on the same address.
func (r *Relay) Resume() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("lab: relay is closed")
	}
	for p := range r.pairs {
		p.thaw()
	}
	if r.ln == nil {
		ln, err := r.listen(r.Addr)
		if err != nil {
			return fmt.Errorf("lab: relay: listening again on %s: %w", r.Addr, err)
		}
		r.ln = ln
		go r.accept(ln)
	}
	r.logf("relay %s: resumed", r.Addr)
	return nil
}

// Close stops the relay and closes its connections.
func (r *Relay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var err error
	if r.ln != nil {
		err = r.ln.Close()
		r.ln = nil
	}
	for p := range r.pairs {
		p.close()
	}
	return err
}
