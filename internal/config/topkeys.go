package config

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// The checks of top-level keys, which config calls in turn; those of a
// cluster's keys are in clusterkeys.go.

// duration parses the top-level duration at key; def stands for an absent
// or bad one.
func (c *checker) duration(key string, v any, def time.Duration) time.Duration {
	return c.durationAt(c.loc.line(-1, key), key, v, def)
}

// durationAt parses the duration at key, on line, within its
// durationBounds; def stands for an absent or bad one.
func (c *checker) durationAt(line int, key string, v any, def time.Duration) time.Duration {
	s, ok := c.str(line, "", key, v, `a duration string like "30s"`)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		c.add(line, "", `%s %q: not a duration (write it like "30s" or "1m30s")`, key, s)
	case d < durationBounds[key][0] || d > durationBounds[key][1]:
		c.add(line, "", "%s %q: must be from %s to %s", key, s, shortDuration(durationBounds[key][0]), shortDuration(durationBounds[key][1]))
	default:
		return d
	}
	return def
}

// shortDuration writes d as people do: 1m, 24h, not 1m0s, 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// durationBounds keep each period where it means something. Below the
// least, a period is a busy loop (a "1ns" full_sync_period rewrites every
// rule without pause); above the most, a failed sync or a rule someone
// else removed waits longer than anyone would look for the cause.
var durationBounds = map[string][2]time.Duration{
	// No floor at all is safe: the sync runner merges what comes while a
	// sync runs, and settles after each one.
	"min_sync_period":  {0, time.Minute},
	"sync_period":      {time.Second, time.Hour},
	"full_sync_period": {10 * time.Second, 24 * time.Hour},
	// 0 serves no kept state. Past a month, what a cluster ran is
	// unlikely to be where its pods are.
	"stale_state_max_age": {0, 30 * 24 * time.Hour},
	// A TTL under a second is 0 on the wire (never cached); over an hour,
	// a service's change would wait that long in resolvers' caches.
	"dns.ttl": {time.Second, time.Hour},
}

// serving checks the addresses of the metrics and health endpoints.
func (c *checker) serving(cfg *Config, raw *rawConfig) {
	before := len(c.problems)
	cfg.MetricsAddress = c.address("metrics_address", raw.MetricsAddress, cfg.MetricsAddress)
	cfg.HealthzAddress = c.address("healthz_address", raw.HealthzAddress, cfg.HealthzAddress)
	m, h := cfg.MetricsAddress, cfg.HealthzAddress
	// Equal addresses share one listener; a wildcard and another address
	// on the same port would make the second listen fail at every start.
	if len(c.problems) == before && m.IsValid() && h.IsValid() && m != h && m.Port() == h.Port() &&
		(m.Addr().IsUnspecified() || h.Addr().IsUnspecified()) {
		at := c.loc.line(-1, "healthz_address")
		if at == 0 {
			at = c.loc.line(-1, "metrics_address")
		}
		c.add(at, "", "healthz_address %s and metrics_address %s cannot both listen on port %d: "+
			"give them the same address to serve both on one listener, or different ports", h, m, h.Port())
	}
	if cfg.Profiling && !m.IsValid() && len(c.problems) == before {
		c.add(c.loc.line(-1, "profiling"), "", "profiling = true needs metrics_address, where the profiles are served: set one, or profiling = false")
	}
}

// address parses an IP:port to listen on; "" turns the endpoint off. Host
// names are refused: the daemon must not depend on a resolver to start.
func (c *checker) address(key string, v any, def netip.AddrPort) netip.AddrPort {
	line := c.loc.line(-1, key)
	s, ok := c.str(line, "", key, v, fmt.Sprintf("a string like %q", def))
	if !ok {
		return def
	}
	if s == "" {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		host, _, splitErr := net.SplitHostPort(s)
		switch {
		case splitErr != nil:
			c.add(line, "", "%s %q: must be an IP address and port, like %q, or \"\" to turn it off", key, s, def)
		case host == "":
			c.add(line, "", "%s %q: give the IP address to listen on, like %q (0.0.0.0 means every IPv4 address)", key, s, def)
		case !isIP(host):
			c.add(line, "", "%s %q: %q is not an IP address (host names are not resolved), like %q", key, s, host, def)
		default:
			c.add(line, "", "%s %q: invalid port: must be 1-65535", key, s)
		}
		return def
	}
	if ap.Port() == 0 {
		c.add(line, "", "%s %q: invalid port: must be 1-65535", key, s)
		return def
	}
	return ap
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

func (c *checker) logging(cfg *Config, raw *rawConfig) {
	line := c.loc.line(-1, "log_level")
	if s, ok := c.str(line, "", "log_level", raw.LogLevel, "a string"); ok {
		if l, known := logLevels[s]; known {
			cfg.LogLevel = l
		} else {
			c.add(line, "", "log_level %q: must be debug, info, warn or error", s)
		}
	}
	line = c.loc.line(-1, "log_format")
	if s, ok := c.str(line, "", "log_format", raw.LogFormat, "a string"); ok {
		switch f := LogFormat(s); f {
		case LogText, LogJSON:
			cfg.LogFormat = f
		default:
			c.add(line, "", "log_format %q: must be text or json", s)
		}
	}
}

// statusSocket checks the path of the status socket; "" turns it off.
func (c *checker) statusSocket(cfg *Config, raw *rawConfig) {
	line := c.loc.line(-1, "status_socket")
	s, ok := c.str(line, "", "status_socket", raw.StatusSocket, fmt.Sprintf("a path like %q", DefaultStatusSocket))
	switch {
	case !ok:
	case s != "" && !filepath.IsAbs(s):
		c.add(line, "", "status_socket %q: must be an absolute path, like %q, or \"\" to turn it off", s, DefaultStatusSocket)
	case len(s) > maxSocketPath:
		c.add(line, "", "status_socket %q: %d bytes, longer than the %d a unix socket's path may have", s, len(s), maxSocketPath)
	default:
		cfg.StatusSocket = s
	}
}

// state checks where the clusters' last known states are kept and how
// old one may be served.
func (c *checker) state(cfg *Config, raw *rawConfig) {
	line := c.loc.line(-1, "state_dir")
	s, ok := c.str(line, "", "state_dir", raw.StateDir, fmt.Sprintf("a path like %q", DefaultStateDir))
	switch {
	case !ok:
	case s != "" && !filepath.IsAbs(s):
		c.add(line, "", "state_dir %q: must be an absolute path, like %q, or \"\" to keep no state", s, DefaultStateDir)
	default:
		cfg.StateDir = filepath.Clean(s)
		if s == "" {
			cfg.StateDir = ""
		}
	}
	cfg.StaleStateMaxAge = c.duration("stale_state_max_age", raw.StaleStateAge, cfg.StaleStateMaxAge)
}

// ebpf checks ebpf mode's keys. Whether the cgroup is on the cgroup v2
// mount is the host's question, asked when the mode starts.
func (c *checker) ebpf(cfg *Config, raw *rawConfig) {
	if raw.EBPFCgroup != nil {
		line := c.loc.line(-1, "ebpf_cgroup")
		s, ok := c.str(line, "", "ebpf_cgroup", raw.EBPFCgroup, `a path like "/sys/fs/cgroup/system.slice"`)
		switch {
		case !ok:
		case s != "" && !filepath.IsAbs(s):
			c.add(line, "", "ebpf_cgroup %q: must be an absolute path of a cgroup v2 directory, or \"\" for the root of the cgroup v2 hierarchy", s)
		case s != "":
			cfg.EBPFCgroup = filepath.Clean(s)
		}
	}
	if raw.EBPFPinDir != nil {
		line := c.loc.line(-1, "ebpf_pin_dir")
		s, ok := c.str(line, "", "ebpf_pin_dir", raw.EBPFPinDir, fmt.Sprintf("a path like %q", DefaultEBPFPinDir))
		// A child of the bpffs, and no deeper: the unit lets the daemon
		// write only there, and cleanup, which runs without a config,
		// finds the pins of any run by looking at its children.
		if ok && (!filepath.IsAbs(s) || filepath.Dir(filepath.Clean(s)) != DefaultBPFFS) {
			c.add(line, "", "ebpf_pin_dir %q: must be a directory directly under %s, like %q", s, DefaultBPFFS, DefaultEBPFPinDir)
		} else if ok {
			cfg.EBPFPinDir = filepath.Clean(s)
		}
	}
}

// maxSocketPath is the room in sockaddr_un.sun_path, without its NUL.
const maxSocketPath = 107

func (c *checker) mark(v any, def uint32) uint32 {
	if v == nil {
		return def
	}
	line := c.loc.line(-1, "masquerade_mark")
	n, ok := v.(int64)
	switch {
	case !ok:
		c.typeErr(line, "", "masquerade_mark", "an integer like 0x00100000", v)
	case n <= 0 || n > math.MaxUint32:
		c.add(line, "", "masquerade_mark %d: must be one bit of a 32-bit mark, like 0x00100000", n)
	case n&(n-1) != 0:
		c.add(line, "", "masquerade_mark %#x: must have exactly one bit set", n)
	case n == 0x4000 || n == 0x8000:
		c.add(line, "", "masquerade_mark %#x: taken by kube-proxy, which uses 0x4000 and 0x8000", n)
	default:
		return uint32(n)
	}
	return def
}
