package names

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"
)

// Bounds on what a client can hold of the server: TCP connections at once
// (each is a goroutine and a buffer), how long each may idle or take to
// send a query, and how many queries one may carry. UDP is served by a
// fixed number of goroutines (udp.go), whatever arrives.
const (
	maxTCPConns   = 64
	tcpTimeout    = 2 * time.Second
	tcpIdle       = 10 * time.Second
	maxTCPQueries = 128
)

// MaxQPS is how many queries a second the server answers at most when
// Options say nothing (config's dns.max_qps, whose default this is), over
// UDP and TCP together, in bursts of a tenth of it. A host's resolver
// caches each answer for the TTL, so its honest load is far below this;
// a flood above it costs the daemon this many answers' CPU (0.2 to 0.3
// of a core in TestDNSFlood, docs/dns.md) and the rest is dropped by the
// kernel, never read.
const MaxQPS = 10000

// Reasons a query is dropped unanswered, the labels of its counter: a
// fixed set, whatever arrives.
const (
	// DropOverflow: the kernel dropped UDP queries because the socket's
	// buffer was full, the server answering at MaxQPS or starved of CPU.
	DropOverflow = "overflow"
	// DropRate: a TCP query waited tcpTimeout for its turn under MaxQPS.
	DropRate = "rate"
	// DropMalformed: a datagram shorter than a DNS header, or a reply,
	// which must never be answered.
	DropMalformed = "malformed"
)

// DropReasons are the reasons Dropped is told of.
var DropReasons = []string{DropOverflow, DropRate, DropMalformed}

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
	// Dropped, when set, is told of queries dropped unanswered, n at a
	// time, for one of DropReasons. It runs on a serving goroutine.
	Dropped func(reason string, n int)
	// MaxQPS replaces the package's MaxQPS when positive.
	MaxQPS float64
	// Inherited are sockets kept across a restart of the daemon, by
	// SocketName: a listen address with its sockets here takes them
	// rather than binding anew, so that the queries sent while no
	// process held them are answered. Bind closes these files.
	Inherited map[string]*os.File
}

// Server answers DNS queries, over UDP and TCP, from the Index it was last
// given; before the first one it knows its zones but no names.
type Server struct {
	opt   Options
	ttl   uint32
	ix    atomic.Pointer[Index]
	limit *rate.Limiter
	// stop ends the waits for the limiter when the server stops.
	stop      context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex
	listeners []listener
	// served: Serve ran; stopped: Stop ran, and Serve must not.
	served, stopped bool
	wg              sync.WaitGroup
}

// listener is one listen address's two sockets.
type listener struct {
	udp *udpConn
	tcp *dns.Server
	raw *net.TCPListener // tcp's, without the limit
}

// New makes a server that answers from an empty index until Set.
func New(opt Options) *Server {
	qps := float64(MaxQPS)
	if opt.MaxQPS > 0 {
		qps = opt.MaxQPS
	}
	s := &Server{opt: opt, ttl: uint32(opt.TTL / time.Second), limit: rate.NewLimiter(rate.Limit(qps), max(1, int(qps/10)))}
	s.stop, s.cancel = context.WithCancel(context.Background())
	s.ix.Store(&Index{})
	return s
}

// Set replaces the index the server answers from.
func (s *Server) Set(ix *Index) { s.ix.Store(ix) }

// Index is the index the server answers from.
func (s *Server) Index() *Index { return s.ix.Load() }

// Start binds every address and serves: Bind, then Serve.
func (s *Server) Start(ctx context.Context) error {
	if err := s.Bind(ctx); err != nil {
		return err
	}
	s.Serve()
	return nil
}

// SocketName names a listen address's socket of one network ("udp",
// "tcp") in Options.Inherited and systemd's file descriptor store, whose
// names may not hold ':'.
func SocketName(network string, a netip.AddrPort) string {
	return "dns-" + network + "-" + strings.ReplaceAll(a.String(), ":", "_")
}

// Bind binds every address, UDP and TCP, or none: an address that cannot
// be bound stops the start with its name. An address whose sockets are in
// Options.Inherited takes them instead: what arrived on them meanwhile
// waits there for Serve. Queries are read only once Serve is called.
func (s *Server) Bind(ctx context.Context) error {
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			if l.udp != nil {
				l.udp.pc.Close()
			}
			if l.tcp != nil {
				l.tcp.Listener.Close()
			}
		}
	}
	var lc net.ListenConfig
	for _, a := range s.opt.Listen {
		pc, err := s.udpSocket(ctx, &lc, a)
		if err != nil {
			closeAll()
			return fmt.Errorf("dns: listen on %s/udp: %w", a, err)
		}
		ls = append(ls, listener{udp: &udpConn{pc: pc}})
		l, err := s.tcpSocket(ctx, &lc, a)
		if err != nil {
			closeAll()
			return fmt.Errorf("dns: listen on %s/tcp: %w", a, err)
		}
		ls[len(ls)-1].raw = l
		ls[len(ls)-1].tcp = &dns.Server{Listener: netutil.LimitListener(l, maxTCPConns), Handler: s,
			ReadTimeout: tcpTimeout, WriteTimeout: tcpTimeout, MaxTCPQueries: maxTCPQueries,
			IdleTimeout: func() time.Duration { return tcpIdle }}
	}
	s.mu.Lock()
	s.listeners = ls
	s.mu.Unlock()
	return nil
}

// udpSocket is the inherited UDP socket of a, or a new one.
func (s *Server) udpSocket(ctx context.Context, lc *net.ListenConfig, a netip.AddrPort) (*net.UDPConn, error) {
	if f := s.opt.Inherited[SocketName("udp", a)]; f != nil {
		pc, err := net.FilePacketConn(f)
		f.Close()
		if err == nil {
			if u, ok := pc.(*net.UDPConn); ok && sameAddr(u.LocalAddr(), a) {
				return u, nil
			}
			pc.Close()
		}
		s.opt.Log.Warn("dns: the UDP socket kept across the restart is not "+a.String()+"'s; binding anew", "err", err)
	}
	return listenUDP(ctx, lc, a)
}

// tcpSocket is the inherited TCP listener of a, or a new one.
func (s *Server) tcpSocket(ctx context.Context, lc *net.ListenConfig, a netip.AddrPort) (*net.TCPListener, error) {
	if f := s.opt.Inherited[SocketName("tcp", a)]; f != nil {
		l, err := net.FileListener(f)
		f.Close()
		if err == nil {
			if t, ok := l.(*net.TCPListener); ok && sameAddr(t.Addr(), a) {
				return t, nil
			}
			l.Close()
		}
		s.opt.Log.Warn("dns: the TCP socket kept across the restart is not "+a.String()+"'s; binding anew", "err", err)
	}
	l, err := lc.Listen(ctx, "tcp", a.String())
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

// sameAddr: port 0 in Listen takes whatever port a socket has.
func sameAddr(got net.Addr, want netip.AddrPort) bool {
	ap, err := netip.ParseAddrPort(got.String())
	return err == nil && ap.Addr().Unmap() == want.Addr().Unmap() && (want.Port() == 0 || ap.Port() == want.Port())
}

// Files are dups of the sockets bound, by SocketName, for systemd's file
// descriptor store.
func (s *Server) Files() (map[string]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*os.File{}
	for i, l := range s.listeners {
		a := s.opt.Listen[i]
		uf, err := l.udp.pc.File()
		if err != nil {
			return nil, err
		}
		out[SocketName("udp", a)] = uf
		tf, err := l.raw.File()
		if err != nil {
			return nil, err
		}
		out[SocketName("tcp", a)] = tf
	}
	return out, nil
}

// Serve reads and answers queries on the sockets Bind bound, until Stop;
// once, whatever the number of calls.
func (s *Server) Serve() {
	s.mu.Lock()
	if s.served || s.stopped {
		s.mu.Unlock()
		return
	}
	s.served = true
	ls := s.listeners
	s.mu.Unlock()
	for _, l := range ls {
		for range udpWorkers {
			s.wg.Go(func() { s.serveUDP(l.udp) })
		}
		srv := l.tcp
		// Serve returns once each serves: a Shutdown before that would
		// find nothing to stop, and the server would then serve on.
		started, ended := make(chan struct{}), make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() {
			defer close(ended)
			if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.opt.Log.Error("dns server stopped", "err", err)
			}
		})
		select {
		case <-started:
		case <-ended:
		}
	}
	s.opt.Log.Info("serving DNS", "listen", s.opt.Listen, "ttl", s.opt.TTL, "max_qps", s.limit.Limit())
}

// Addrs are the addresses bound, UDP's then TCP's for each listen
// address: with port 0 in Listen, the ports the kernel chose.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		out = append(out, l.udp.pc.LocalAddr(), l.tcp.Listener.Addr())
	}
	return out
}

// Stop closes every listener and waits for the servers to end.
func (s *Server) Stop() {
	s.mu.Lock()
	ls := s.listeners
	s.listeners = nil
	served := s.served
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	for _, l := range ls {
		l.udp.pc.Close()
		if served {
			l.tcp.Shutdown()
		} else {
			// Never served: Shutdown would refuse, and leave it open.
			l.raw.Close()
		}
	}
	s.wg.Wait()
}

// ServeDNS implements dns.Handler: the TCP queries. A query waits its
// turn under the rate limit, as long as the client may take to send one:
// the connection's goroutine waits, at most maxTCPConns of them.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.stop, tcpTimeout)
	err := s.limit.Wait(ctx)
	cancel()
	if err != nil {
		s.dropped(DropRate, 1)
		return
	}
	_, udp := w.LocalAddr().(*net.UDPAddr)
	ix := s.ix.Load()
	m := s.reply(ix, req, udp)
	if m == nil {
		return
	}
	if err := w.WriteMsg(m); err != nil {
		s.opt.Log.Debug("dns answer not sent", "to", w.RemoteAddr(), "err", err)
	}
	s.answered(ix, req, m, start)
}

// reply is the answer to req from ix, truncated to what the client takes
// over UDP; nil when none is due.
func (s *Server) reply(ix *Index, req *dns.Msg, udp bool) *dns.Msg {
	m := Answer(ix, req, s.ttl)
	if m == nil || !udp {
		return m
	}
	// The most the client takes: 512 without EDNS (RFC 1035), else
	// what it offers, up to ours. Truncate sets TC, and the client
	// asks again over TCP.
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(dns.MinMsgSize, min(int(opt.UDPSize()), udpSize))
	}
	m.Truncate(size)
	return m
}

// answered tells Options.Answered of the answer m to req.
func (s *Server) answered(ix *Index, req, m *dns.Msg, start time.Time) {
	if s.opt.Answered == nil {
		return
	}
	cluster := ""
	if len(req.Question) == 1 {
		cluster = ix.clusterOf(dns.CanonicalName(req.Question[0].Name))
	}
	s.opt.Answered(cluster, m.Rcode, time.Since(start))
}

func (s *Server) dropped(reason string, n int) {
	if s.opt.Dropped != nil && n > 0 {
		s.opt.Dropped(reason, n)
	}
}
