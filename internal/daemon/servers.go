package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The HTTP servers of metrics_address and healthz_address.

// server is one HTTP listener with what it serves.
type server struct {
	keys []string // the config keys that asked for it, for messages
	ln   net.Listener
	mux  *http.ServeMux
	srv  *http.Server
}

// listen opens the metrics and health listeners, one when both addresses
// are the same.
func (d *Daemon) listen() ([]*server, error) {
	health := d.health.Handler()
	byAddr := map[netip.AddrPort]*server{}
	var servers []*server
	type endpoint struct {
		key     string
		addr    netip.AddrPort
		pattern string
		h       http.Handler
	}
	endpoints := []endpoint{
		{"metrics_address", d.cfg.MetricsAddress, "/metrics", d.metrics.Handler()},
		{"healthz_address", d.cfg.HealthzAddress, "/healthz", health},
		{"healthz_address", d.cfg.HealthzAddress, "/livez", health},
		{"healthz_address", d.cfg.HealthzAddress, "/readyz", health},
	}
	if d.cfg.Profiling {
		// Index serves the named profiles (heap, goroutine, ...) under it;
		// the others are handlers of their own, as in net/http/pprof's init.
		for pattern, h := range map[string]http.HandlerFunc{"/debug/pprof/": pprof.Index, "/debug/pprof/cmdline": pprof.Cmdline,
			"/debug/pprof/profile": pprof.Profile, "/debug/pprof/symbol": pprof.Symbol, "/debug/pprof/trace": pprof.Trace} {
			endpoints = append(endpoints, endpoint{"metrics_address", d.cfg.MetricsAddress, pattern, h})
		}
	}
	for _, e := range endpoints {
		if !e.addr.IsValid() {
			continue
		}
		s := byAddr[e.addr]
		if s == nil {
			ln, err := net.Listen("tcp", e.addr.String())
			if err != nil {
				closeAll(servers)
				return nil, fmt.Errorf("cannot serve %s %s (choose another port, or \"\" to turn it off): %w", e.key, e.addr, err)
			}
			s = &server{ln: ln, mux: http.NewServeMux()}
			s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
			byAddr[e.addr] = s
			servers = append(servers, s)
		}
		if !slices.Contains(s.keys, e.key) {
			s.keys = append(s.keys, e.key)
		}
		s.mux.Handle(e.pattern, e.h)
	}
	return servers, nil
}

func closeAll(servers []*server) {
	for _, s := range servers {
		s.ln.Close()
	}
}

// serve runs the servers until ctx is done. A server that fails later is
// logged, not fatal: the datapath matters more than its observers.
func (d *Daemon) serve(ctx context.Context, servers []*server) {
	for _, s := range servers {
		d.log.Info("serving "+strings.Join(s.keys, " and "), "address", s.ln.Addr().String())
		go func() {
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("stopped serving "+strings.Join(s.keys, " and "), "address", s.ln.Addr().String(), "err", err)
			}
		}()
		context.AfterFunc(ctx, func() {
			shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = s.srv.Shutdown(shutdown) // past the timeout, in-flight scrapes are cut: we are stopping
		})
	}
}
