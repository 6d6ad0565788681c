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
)

// Capabilities is what one mode can do.
type Capabilities []Capability

// Has says whether c includes x.
func (c Capabilities) Has(x Capability) bool { return slices.Contains(c, x) }

// modes are the datapath modes linked into this binary, registered by
// internal/proxy so that this package never imports a backend.
var (
	modesMu sync.RWMutex
	modes   = map[Mode]Capabilities{}
)

// RegisterMode makes name a valid value of the key mode, able to do can.
// internal/proxy.Register calls it; tests of this package call it too.
func RegisterMode(name Mode, can Capabilities) {
	modesMu.Lock()
	defer modesMu.Unlock()
	modes[name] = slices.Clone(can)
}

func modeCapabilities(name Mode) (Capabilities, bool) {
	modesMu.RLock()
	defer modesMu.RUnlock()
	c, ok := modes[name]
	return c, ok
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
	if _, ok := modeCapabilities(Mode(s)); !ok {
		c.add(line, "", "mode %q: this build has the modes %s", s, modeNames())
		return
	}
	cfg.Mode = Mode(s)
}

// capabilities refuses what the configured mode cannot do, naming the key
// that asks for it: a config that half works would be found out by the
// first packet that goes nowhere.
func (c *checker) capabilities(cfg *Config, raw *rawConfig) {
	can, ok := modeCapabilities(cfg.Mode)
	if !ok {
		return // an unknown mode is reported already
	}
	refuse := func(line int, who, key string, x Capability) {
		c.add(line, who, "%s: mode %q cannot do %s", key, cfg.Mode, x)
	}
	if len(cfg.RoutedClients) > 0 && !can.Has(CanRoutedClients) {
		refuse(c.loc.line(-1, "routed_clients"), "", "routed_clients", CanRoutedClients)
	}
	if raw.Masquerade != nil && cfg.Masquerade && !can.Has(CanMasquerade) {
		refuse(c.loc.line(-1, "masquerade"), "", "masquerade", CanMasquerade)
	}
	for i, cl := range cfg.Clusters {
		who := fmt.Sprintf("cluster %q", cl.Name)
		line := func(key string) int { return c.loc.line(i, "clusters."+key) }
		if cl.ServeNodePorts && !can.Has(CanNodePorts) {
			refuse(line("serve_node_ports"), who, "serve_node_ports", CanNodePorts)
		}
		if len(cl.AllowExternalIPs) > 0 && !can.Has(CanExternalIPs) {
			refuse(line("allow_external_ips"), who, "allow_external_ips", CanExternalIPs)
		}
		if slices.ContainsFunc(cl.ServiceCIDRs, func(p netip.Prefix) bool { return p.Addr().Is6() }) && !can.Has(CanIPv6) {
			refuse(line("service_cidrs"), who, "service_cidrs", CanIPv6)
		}
	}
}
