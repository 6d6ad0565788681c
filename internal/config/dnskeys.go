package config

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DNS is the [dns] table: the daemon's DNS server, which answers the
// clusters' service names from what it watches. Off without it.
type DNS struct {
	// Listen are the addresses it answers on, UDP and TCP each; none
	// turns the server off.
	Listen []netip.AddrPort
	// TTL of every answer, and of the negative answers' SOA minimum.
	TTL time.Duration
	// Resolved is ResolvedAuto or ResolvedOff: whether the daemon
	// registers the server with systemd-resolved for the zones.
	Resolved string
	// MaxQPS is how many queries a second the server answers at most,
	// over UDP and TCP and every listen address together.
	MaxQPS int
}

// Enabled says whether the DNS server runs.
func (d DNS) Enabled() bool { return len(d.Listen) > 0 }

// DNS defaults. 127.0.0.153 is a loopback address of its own, so that the
// server never fights the host's resolver (127.0.0.53, systemd-resolved)
// or a local dnsmasq (127.0.0.1) over port 53.
var DefaultDNSListen = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.153:53")}

// The values of dns.resolved. "auto" registers when systemd-resolved runs
// (and whenever it starts again), and leaves a host without it alone: a
// host's resolver is either resolved, which wants telling, or another one
// that dns-config's snippets are for.
const (
	ResolvedAuto = "auto"
	ResolvedOff  = "off"
)

const (
	DefaultDNSTTL = 5 * time.Second
	// DefaultDNSMaxQPS: a host's resolver caches each answer for the
	// TTL, so even a routed subnet's load is far below it, and a flood
	// costs the daemon at most this many answers' CPU (0.2 to 0.3 of a
	// core in TestDNSFlood). maxDNSQPS bounds that cost; minDNSQPS keeps
	// a host's own lookups from being refused.
	DefaultDNSMaxQPS = 10000
	minDNSQPS        = 100
	maxDNSQPS        = 1000000
	// DefaultZoneSuffix makes a cluster's default zone <name>.internal:
	// .internal is reserved for private use (ICANN, 2024), so the name
	// can never shadow a public one, as "prod" (a real TLD) would.
	DefaultZoneSuffix = ".internal"
	// ClusterLocal is the zone that one cluster may also claim with
	// dns_default, so that names copied from inside a cluster resolve.
	ClusterLocal = "cluster.local"
	// maxZoneLen leaves room in a 253-byte name for the longest service
	// and namespace names (63 each) and "svc": <svc>.<ns>.svc.<zone>.
	maxZoneLen = 253 - 63 - 1 - 63 - 1 - 3 - 1
)

var dnsKeys = []string{"listen", "ttl", "resolved", "max_qps"}

// dns checks the [dns] table.
func (c *checker) dns(cfg *Config, v any) {
	if v == nil {
		return
	}
	line := func(key string) int { return c.loc.line(-1, "dns."+key) }
	t, ok := v.(map[string]any)
	if !ok {
		c.typeErr(c.loc.line(-1, "dns"), "", "dns", "a table written [dns]", v)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if !slices.Contains(dnsKeys, k) {
			c.unknown(line(k), "dns."+k, k, dnsKeys, nil, "")
		}
	}
	cfg.DNS = DNS{Listen: DefaultDNSListen, TTL: DefaultDNSTTL, Resolved: ResolvedAuto, MaxQPS: DefaultDNSMaxQPS}
	if raw, ok := t["listen"]; ok {
		cfg.DNS.Listen = c.dnsListen(line("listen"), raw, cfg)
	}
	if raw, ok := t["ttl"]; ok {
		cfg.DNS.TTL = c.durationAt(line("ttl"), "dns.ttl", raw, DefaultDNSTTL)
	}
	if raw, ok := t["max_qps"]; ok {
		n, ok := raw.(int64)
		switch {
		case !ok:
			c.typeErr(line("max_qps"), "", "dns.max_qps", fmt.Sprintf("an integer like %d", DefaultDNSMaxQPS), raw)
		case n < minDNSQPS || n > maxDNSQPS:
			c.add(line("max_qps"), "", "dns.max_qps %d: must be %d to %d (the default is %d)", n, minDNSQPS, maxDNSQPS, DefaultDNSMaxQPS)
		default:
			cfg.DNS.MaxQPS = int(n)
		}
	}
	if raw, ok := t["resolved"]; ok {
		if s, ok := c.str(line("resolved"), "", "dns.resolved", raw, "a string"); ok {
			if s == ResolvedAuto || s == ResolvedOff {
				cfg.DNS.Resolved = s
			} else {
				c.add(line("resolved"), "", "dns.resolved %q: must be %q or %q", s, ResolvedAuto, ResolvedOff)
			}
		}
	}
}

func (c *checker) dnsListen(line int, v any, cfg *Config) []netip.AddrPort {
	list, ok := c.strings(line, "", "dns.listen", v)
	if !ok {
		return nil
	}
	var out []netip.AddrPort
	for i, s := range list {
		key := fmt.Sprintf("dns.listen[%d]", i)
		ap, err := netip.ParseAddrPort(s)
		switch {
		case err != nil || ap.Addr().Zone() != "":
			c.add(line, "", "%s %q: must be an IP address and port, like %q", key, s, DefaultDNSListen[0])
			continue
		case ap.Port() == 0:
			c.add(line, "", "%s %q: invalid port: must be 1-65535", key, s)
			continue
		case slices.Contains(out, ap):
			c.add(line, "", "%s %q: listed twice", key, s)
			continue
		}
		// The metrics and health listeners are TCP too: the same
		// address would make one of them fail at every start.
		for _, other := range []struct {
			key  string
			addr netip.AddrPort
		}{{"metrics_address", cfg.MetricsAddress}, {"healthz_address", cfg.HealthzAddress}} {
			if other.addr.IsValid() && other.addr.Port() == ap.Port() &&
				(other.addr.Addr() == ap.Addr() || other.addr.Addr().IsUnspecified() || ap.Addr().IsUnspecified()) {
				c.add(line, "", "%s %q: %s %s listens on the same port", key, s, other.key, other.addr)
			}
		}
		out = append(out, ap)
	}
	return out
}

// dnsZone checks a cluster's dns_zone and dns_default; the zones of all
// clusters are compared once every cluster is read (zoneOverlaps).
func (c *checker) dnsZone(cl *Cluster, who string, line func(string) int, raw rawCluster) {
	if cl.Name != "" {
		cl.DNSZone = cl.Name + DefaultZoneSuffix
	}
	if raw.DNSZone != nil {
		if s, ok := c.str(line("dns_zone"), who, "dns_zone", raw.DNSZone, "a string"); ok {
			z := strings.TrimSuffix(strings.ToLower(s), ".")
			if why := badZone(z); why != "" {
				c.add(line("dns_zone"), who, "dns_zone %q: %s", s, why)
			} else {
				cl.DNSZone = z
			}
		}
	}
	if raw.DNSDefault != nil {
		if b, ok := raw.DNSDefault.(bool); ok {
			cl.DNSDefault = b
		} else {
			c.typeErr(line("dns_default"), who, "dns_default", "true or false", raw.DNSDefault)
		}
	}
}

// badZone says what is wrong with a zone name, "" when nothing is.
func badZone(z string) string {
	switch {
	case z == "":
		return "empty"
	case len(z) > maxZoneLen:
		return fmt.Sprintf("longer than %d characters, which leaves no room for the longest service names", maxZoneLen)
	case z == "arpa" || strings.HasSuffix(z, ".arpa"):
		return "a reverse-lookup zone: the daemon answers those of its own addresses by itself"
	}
	for _, label := range strings.Split(z, ".") {
		if !dnsLabel(label) {
			return fmt.Sprintf("label %q: must be 1 to 63 letters, digits and '-', not starting or ending with '-'", label)
		}
	}
	return ""
}

func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// zoneOverlaps refuses two clusters answering one name: equal zones, a
// zone inside another's, or two claims to cluster.local.
func (c *checker) zoneOverlaps(cfg *Config) {
	type claim struct {
		zone, key string
		i         int
	}
	var claims []claim
	for i, cl := range cfg.Clusters {
		if cl.DNSZone != "" {
			claims = append(claims, claim{cl.DNSZone, "dns_zone", i})
		}
		if cl.DNSDefault {
			claims = append(claims, claim{ClusterLocal, "dns_default", i})
		}
	}
	for a := range claims {
		for b := range a {
			x, y := claims[a], claims[b]
			if !zoneWithin(x.zone, y.zone) && !zoneWithin(y.zone, x.zone) {
				continue
			}
			who := c.clusterName(x.i, cfg.Clusters[x.i])
			what := fmt.Sprintf("zone %s", x.zone)
			if x.key == "dns_default" {
				what = "cluster.local"
			}
			if x.key == "dns_default" && y.key == "dns_default" {
				c.add(c.loc.line(x.i, "clusters.dns_default"), who, "dns_default: only one cluster may answer cluster.local, and %s does (line %d)",
					c.clusterName(y.i, cfg.Clusters[y.i]), c.loc.line(y.i, "clusters.dns_default"))
				continue
			}
			if x.i == y.i {
				c.add(c.loc.line(x.i, "clusters."+x.key), who, "%s: %s overlaps its own zone %s", x.key, what, y.zone)
				continue
			}
			c.add(c.loc.line(x.i, "clusters."+x.key), who, "%s: %s overlaps zone %s of %s (line %d): one name would have two answers",
				x.key, what, y.zone, c.clusterName(y.i, cfg.Clusters[y.i]), c.loc.line(y.i, "clusters."+y.key))
		}
	}
}

// zoneWithin says whether name is zone or a name under it.
func zoneWithin(name, zone string) bool {
	return name == zone || strings.HasSuffix(name, "."+zone)
}
