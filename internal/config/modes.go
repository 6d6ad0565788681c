package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Capability is something a config can ask of a datapath mode.
type Capability string

// What modes can do. The first ones are asked for by config keys and
// checked here; the others are behaviour that a mode has or lacks, which
// status, the docs and the end-to-end scenarios read from the mode.
const (
	CanRoutedClients Capability = "routed clients" // routed_clients
	CanNodePorts     Capability = "node ports"     // serve_node_ports
	CanExternalIPs   Capability = "external IPs"   // allow_external_ips
	CanMasquerade    Capability = "masquerading"   // masquerade = true
	CanIPv6          Capability = "IPv6 services"  // an IPv6 range in service_cidrs
	CanReject        Capability = "refusing ports without endpoints"
	CanAffinity      Capability = "ClientIP session affinity"
	// Counting each service port's new connections in the kernel, for
	// status and service_metrics; asked by no key: a mode without it
	// exports no such series.
	CanCountConnections Capability = "counting new connections per service port"
	// Programming the kernel through a command each sync runs
	// (iptables-restore, nft -f, ipset restore), found on PATH, rather
	// than through system calls of the daemon's own; asked by no key. A
	// sync fails when the command does, which is how the end-to-end
	// scenarios make syncs fail on demand.
	CanSyncByCommand Capability = "syncing through a command"
)

// Capabilities is what one mode can do.
type Capabilities []Capability

// Has says whether c includes x.
func (c Capabilities) Has(x Capability) bool { return slices.Contains(c, x) }

// Bounds are what a mode's kernel objects can hold, for a mode whose
// objects are sized when they load (an eBPF map's capacity): a config
// whose limits let the clusters hand it more is refused, since a write
// that no longer fits would fail every sync, of every cluster. A zero
// field bounds nothing.
type Bounds struct {
	// EndpointsPerPort is the most endpoints one service port can have:
	// each cluster's max_endpoints_per_port must be within it.
	EndpointsPerPort int
	// Endpoints is the most endpoint entries of all clusters together:
	// the sum of their max_endpoints must be within it.
	Endpoints int
}

// modes are the datapath modes linked into this binary, registered by
// internal/proxy so that this package never imports a backend.
var (
	modesMu sync.RWMutex
	modes   = map[Mode]modeInfo{}
)

type modeInfo struct {
	can    Capabilities
	bounds Bounds
}

// RegisterMode makes name a valid value of the key mode, able to do can
// within b. internal/proxy.Register calls it; tests of this package call
// it too.
func RegisterMode(name Mode, can Capabilities, b Bounds) {
	modesMu.Lock()
	defer modesMu.Unlock()
	modes[name] = modeInfo{slices.Clone(can), b}
}

func modeCapabilities(name Mode) (Capabilities, bool) {
	modesMu.RLock()
	defer modesMu.RUnlock()
	m, ok := modes[name]
	return m.can, ok
}

func modeBounds(name Mode) Bounds {
	modesMu.RLock()
	defer modesMu.RUnlock()
	return modes[name].bounds
}

func modeNames() string {
	modesMu.RLock()
	defer modesMu.RUnlock()
	var names []string
	for n := range modes {
		names = append(names, fmt.Sprintf("%q", n))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// mode checks the key mode.
func (c *checker) mode(cfg *Config, raw any) {
	if raw == nil {
		return
	}
	line := c.loc.line(-1, "mode")
	s, ok := c.str(line, "", "mode", raw, "a string")
	if !ok {
		return
	}
	if _, ok := modeCapabilities(Mode(s)); !ok && Mode(s) != ModeAuto {
		c.add(line, "", "mode %q: this build has the modes %s, and \"auto\" to pick one", s, modeNames())
		return
	}
	cfg.Mode = Mode(s)
}

// capabilities refuses what the configured mode cannot do, naming the key
// that asks for it: a config that half works would be found out by the
// first packet that goes nowhere. With mode = "auto" it refuses what no mode
// of this build can do, and records what is asked for the daemon's choice.
func (c *checker) capabilities(cfg *Config, raw *rawConfig) {
	type ask struct {
		line     int
		who, key string
		can      Capability
	}
	var asks []ask
	if len(cfg.RoutedClients) > 0 {
		asks = append(asks, ask{c.loc.line(-1, "routed_clients"), "", "routed_clients", CanRoutedClients})
	}
	if raw.Masquerade != nil && cfg.Masquerade {
		asks = append(asks, ask{c.loc.line(-1, "masquerade"), "", "masquerade", CanMasquerade})
	}
	for i, cl := range cfg.Clusters {
		who := fmt.Sprintf("cluster %q", cl.Name)
		line := func(key string) int { return c.loc.line(i, "clusters."+key) }
		if cl.ServeNodePorts {
			asks = append(asks, ask{line("serve_node_ports"), who, "serve_node_ports", CanNodePorts})
		}
		if len(cl.AllowExternalIPs) > 0 {
			asks = append(asks, ask{line("allow_external_ips"), who, "allow_external_ips", CanExternalIPs})
		}
		if slices.ContainsFunc(cl.ServiceCIDRs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			asks = append(asks, ask{line("service_cidrs"), who, "service_cidrs", CanIPv6})
		}
	}
	for _, a := range asks {
		if !slices.Contains(cfg.Asks, a.can) {
			cfg.Asks = append(cfg.Asks, a.can)
		}
	}
	if cfg.Mode == ModeAuto {
		for _, a := range asks {
			if !anyModeCan(a.can) {
				c.add(a.line, a.who, "%s: no mode of this build can do %s (mode = \"auto\")", a.key, a.can)
			}
		}
		return
	}
	can, ok := modeCapabilities(cfg.Mode)
	if !ok {
		return // an unknown mode is reported already
	}
	// The way out is a mode that does all the config asks, not only the
	// one key: naming one that lacks another would send the admin round.
	var all Capabilities
	for _, a := range asks {
		all = append(all, a.can)
	}
	alt := modesThatCan(all)
	for _, a := range asks {
		if !can.Has(a.can) {
			if alt == "" {
				c.add(a.line, a.who, "%s: mode %q cannot do %s", a.key, cfg.Mode, a.can)
			} else {
				c.add(a.line, a.who, "%s: mode %q cannot do %s; use %s", a.key, cfg.Mode, a.can, alt)
			}
		}
	}
}

// modesThatCan names the modes that can do every one of want, as the
// config would spell them: `mode = "iptables"` or `mode = "nftables"`.
func modesThatCan(want Capabilities) string {
	modesMu.RLock()
	var names []string
	for n, m := range modes {
		if !slices.ContainsFunc(want, func(w Capability) bool { return !m.can.Has(w) }) {
			names = append(names, fmt.Sprintf("mode = %q", n))
		}
	}
	modesMu.RUnlock()
	slices.Sort(names)
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func anyModeCan(x Capability) bool {
	modesMu.RLock()
	defer modesMu.RUnlock()
	for _, m := range modes {
		if m.can.Has(x) {
			return true
		}
	}
	return false
}
