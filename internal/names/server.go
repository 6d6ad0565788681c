package names

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
)

// Bounds on what a client can hold of the server: TCP connections at once
// (each is a goroutine and a buffer), how long each may idle or take to
// send a query, and how many queries one may carry. UDP needs none: each
// datagram is answered at once from memory.
const (
	maxTCPConns   = 64
	tcpTimeout    = 2 * time.Second
	tcpIdle       = 10 * time.Second
	maxTCPQueries = 128
)

// Options configure a Server.
type Options struct {
	Listen []netip.AddrPort
	TTL    time.Duration
	Log    *slog.Logger
	// Answered, when set, is told of each query answered: the cluster
	// whose zone or service range the name is in ("" for a name outside
	// them all), its rcode and how long the answer took. It runs on the
	// query's goroutine, so it must be quick.
	Answered func(cluster string, rcode int, took time.Duration)
}

// Server answers DNS queries, over UDP and TCP, from the Index it was last
// given; before the first one it knows its zones but no names.
type Server struct {
	opt     Options
	ttl     uint32
	ix      atomic.Pointer[Index]
	mu      sync.Mutex
	servers []*dns.Server
	wg      sync.WaitGroup
}

// New makes a server that answers from an empty index until Set.
func New(opt Options) *Server {
	s := &Server{opt: opt, ttl: uint32(opt.TTL / time.Second)}
	s.ix.Store(&Index{})
	return s
}

// Set replaces the index the server answers from.
func (s *Server) Set(ix *Index) { s.ix.Store(ix) }

// Index is the index the server answers from.
func (s *Server) Index() *Index { return s.ix.Load() }

// Start binds every address, UDP and TCP, or none: an address that cannot
// be bound stops the start with its name.
func (s *Server) Start(ctx context.Context) error {
	var servers []*dns.Server
	closeAll := func() {
		for _, srv := range servers {
			if srv.PacketConn != nil {
				srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				srv.Listener.Close()
			}
		}
	}
	var lc net.ListenConfig
	for _, a := range s.opt.Listen {
		pc, err := lc.ListenPacket(ctx, "udp", a.String())
		if err != nil {
			closeAll()
			return fmt.Errorf("dns: listen on %s/udp: %w", a, err)
		}
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: s})
		l, err := lc.Listen(ctx, "tcp", a.String())
		if err != nil {
			closeAll()
			return fmt.Errorf("dns: listen on %s/tcp: %w", a, err)
		}
		servers = append(servers, &dns.Server{Listener: netutil.LimitListener(l, maxTCPConns), Handler: s,
			ReadTimeout: tcpTimeout, WriteTimeout: tcpTimeout, MaxTCPQueries: maxTCPQueries,
			IdleTimeout: func() time.Duration { return tcpIdle }})
	}
	s.mu.Lock()
	s.servers = servers
	s.mu.Unlock()
	for _, srv := range servers {
		// Start returns once each serves: a Shutdown before that would
		// find nothing to stop, and the server would then serve on.
		started, ended := make(chan struct{}), make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(ended)
			if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.opt.Log.Error("dns server stopped", "err", err)
			}
		}()
		select {
		case <-started:
		case <-ended:
		}
	}
	s.opt.Log.Info("serving DNS", "listen", s.opt.Listen, "ttl", s.opt.TTL)
	return nil
}

// Addrs are the addresses bound, UDP's then TCP's for each listen
// address: with port 0 in Listen, the ports the kernel chose.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, srv := range s.servers {
		if srv.PacketConn != nil {
			out = append(out, srv.PacketConn.LocalAddr())
		} else {
			out = append(out, srv.Listener.Addr())
		}
	}
	return out
}

// Stop closes every listener and waits for the servers to end.
func (s *Server) Stop() {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
	s.wg.Wait()
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	ix := s.ix.Load()
	m := Answer(ix, req, s.ttl)
	if m == nil {
		return
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		// The most the client takes: 512 without EDNS (RFC 1035), else
		// what it offers, up to ours. Truncate sets TC, and the client
		// asks again over TCP.
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(dns.MinMsgSize, min(int(opt.UDPSize()), udpSize))
		}
		m.Truncate(size)
	}
	if err := w.WriteMsg(m); err != nil {
		s.opt.Log.Debug("dns answer not sent", "to", w.RemoteAddr(), "err", err)
	}
	if s.opt.Answered != nil {
		cluster := ""
		if len(req.Question) == 1 {
			cluster = ix.clusterOf(dns.CanonicalName(req.Question[0].Name))
		}
		s.opt.Answered(cluster, m.Rcode, time.Since(start))
	}
}
