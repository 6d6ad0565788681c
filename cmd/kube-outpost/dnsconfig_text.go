package main

import (
	"fmt"
	"net/netip"
	"strings"
)

// dnsTargets are what a resolver needs to forward the daemon's zones to
// its DNS server: where it listens, and each cluster's zones.
type dnsTargets struct {
	Listen   []netip.AddrPort
	Clusters []dnsCluster
	// Routed: routed_clients is set, so routed hosts reach the services.
	Routed bool
}

type dnsCluster struct {
	Name    string
	Zones   []string
	Reverse []string // the reverse zones of its service ranges
}

// resolvers are the snippets dns-config writes, in its order.
var resolvers = []struct {
	name  string
	write func(b *strings.Builder, t dnsTargets)
}{
	{"systemd-resolved", resolvedText},
	{"dnsmasq", dnsmasqText},
	{"unbound", unboundText},
	{"bind", bindText},
	{"routed", routedText},
}

func resolverNames() []string {
	var out []string
	for _, r := range resolvers {
		out = append(out, r.name)
	}
	return out
}

// dnsConfigText is the header and the snippet of each resolver in only,
// or of every one when only is "".
func dnsConfigText(t dnsTargets, only string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# kube-outpost answers these zones on %s, UDP and TCP, and refuses every\n", joinAddrs(t.Listen, ", "))
	b.WriteString("# other name (it never recurses): forward exactly these to it.\n")
	for _, c := range t.Clusters {
		fmt.Fprintf(&b, "#   %s: %s\n", c.Name, strings.Join(c.Zones, ", "))
		if len(c.Reverse) > 0 {
			fmt.Fprintf(&b, "#   %s, reverse: %s\n", c.Name, strings.Join(c.Reverse, ", "))
		}
	}
	for _, r := range resolvers {
		if only == "" || only == r.name {
			b.WriteByte('\n')
			r.write(&b, t)
		}
	}
	return b.String()
}

func (t dnsTargets) zones() []string {
	var out []string
	for _, c := range t.Clusters {
		out = append(out, c.Zones...)
	}
	return out
}

func (t dnsTargets) reverse() []string {
	var out []string
	for _, c := range t.Clusters {
		out = append(out, c.Reverse...)
	}
	return out
}

func (t dnsTargets) all() []string { return append(t.zones(), t.reverse()...) }

// local are the listen addresses as this host's own resolver reaches
// them: a wildcard is reached at loopback.
func (t dnsTargets) local() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range t.Listen {
		switch {
		case a.Addr() == netip.IPv4Unspecified():
			a = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port())
		case a.Addr() == netip.IPv6Unspecified():
			a = netip.AddrPortFrom(netip.IPv6Loopback(), a.Port())
		}
		out = append(out, a)
	}
	return out
}

func joinAddrs(as []netip.AddrPort, sep string) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, sep)
}

func resolvedText(b *strings.Builder, t dnsTargets) {
	b.WriteString("## systemd-resolved: /etc/systemd/resolved.conf.d/kube-outpost.conf,\n")
	b.WriteString("## then systemctl restart systemd-resolved\n")
	// The registration is the better way; this stays for resolved = "off"
	// and hosts where the daemon may not use the system bus.
	b.WriteString("# Not needed with dns.resolved = \"auto\" (the default): the daemon registers\n")
	b.WriteString("# the server with a running resolved for these zones only, on a link of its\n")
	b.WriteString("# own (docs/dns.md). This file is for dns.resolved = \"off\".\n")
	var servers []string
	otherPort := false
	for _, a := range t.local() {
		if a.Port() == 53 {
			// The bare address: every version of resolved reads it.
			servers = append(servers, a.Addr().String())
			continue
		}
		otherPort = true
		servers = append(servers, a.String())
	}
	b.WriteString("[Resolve]\n")
	fmt.Fprintf(b, "DNS=%s\n", strings.Join(servers, " "))
	var domains []string
	for _, z := range t.all() {
		domains = append(domains, "~"+z)
	}
	fmt.Fprintf(b, "Domains=%s\n", strings.Join(domains, " "))
	if otherPort {
		b.WriteString("# DNS= takes a port (address:port, [IPv6]:port) since systemd 246; older\n")
		b.WriteString("# versions ask port 53 only: listen on 53 for them.\n")
	}
	b.WriteString("# The ~ makes each a routing domain: names under it go to DNS= only. This\n")
	b.WriteString("# file's servers are global, and resolved also sends them names outside\n")
	b.WriteString("# every routing domain, which they refuse and the links' servers answer.\n")
	b.WriteString("# With other global DNS= servers (in resolved.conf, not per link), resolved\n")
	b.WriteString("# asks one server of the list at a time: give kube-outpost's zones to\n")
	b.WriteString("# dnsmasq or unbound there instead.\n")
}

func dnsmasqText(b *strings.Builder, t dnsTargets) {
	b.WriteString("## dnsmasq: /etc/dnsmasq.d/kube-outpost.conf, then restart dnsmasq\n")
	dnsmasqLines(b, t.all(), t.local())
	// stop-dns-rebind drops private addresses from upstream answers;
	// these are private by design.
	fmt.Fprintf(b, "rebind-domain-ok=/%s/\n", strings.Join(t.zones(), "/"))
}

func dnsmasqLines(b *strings.Builder, zones []string, to []netip.AddrPort) {
	for _, z := range zones {
		for _, a := range to {
			fmt.Fprintf(b, "server=/%s/%s#%d\n", z, a.Addr(), a.Port())
		}
	}
}

// unboundText: tried with unbound 1.17, each of do-not-query-localhost
// and the transparent local zones is needed: without the first every
// name is SERVFAIL, without the second 10.in-addr.arpa's default static
// zone answers the reverse names NXDOMAIN.
func unboundText(b *strings.Builder, t dnsTargets) {
	b.WriteString("## unbound: /etc/unbound/unbound.conf.d/kube-outpost.conf, then\n")
	b.WriteString("## unbound-checkconf && systemctl reload unbound\n")
	b.WriteString("server:\n")
	for _, a := range t.local() {
		if a.Addr().IsLoopback() {
			b.WriteString("    # unbound never asks 127.0.0.0/8 or ::1 unless told to.\n")
			b.WriteString("    do-not-query-localhost: no\n")
			break
		}
	}
	b.WriteString("    # The zones are not signed: no DNSSEC validation of them; and their\n")
	b.WriteString("    # answers are private addresses, which private-address would strip.\n")
	for _, z := range t.all() {
		fmt.Fprintf(b, "    domain-insecure: %q\n", z)
	}
	for _, z := range t.zones() {
		fmt.Fprintf(b, "    private-domain: %q\n", z)
	}
	if rev := t.reverse(); len(rev) > 0 {
		b.WriteString("    # unbound answers the reverse names of private ranges itself (RFC 6303);\n")
		b.WriteString("    # these reverse zones go to kube-outpost instead.\n")
		for _, z := range rev {
			fmt.Fprintf(b, "    local-zone: \"%s.\" transparent\n", z)
		}
	}
	for _, z := range t.all() {
		fmt.Fprintf(b, "forward-zone:\n    name: \"%s.\"\n", z)
		for _, a := range t.local() {
			fmt.Fprintf(b, "    forward-addr: %s@%d\n", a.Addr(), a.Port())
		}
	}
}

func bindText(b *strings.Builder, t dnsTargets) {
	b.WriteString("## BIND: in named.conf, or a file it includes; then rndc reconfig\n")
	var fwd []string
	for _, a := range t.local() {
		fwd = append(fwd, fmt.Sprintf("%s port %d;", a.Addr(), a.Port()))
	}
	for _, z := range t.all() {
		fmt.Fprintf(b, "zone %q { type forward; forward only; forwarders { %s }; };\n", z, strings.Join(fwd, " "))
	}
	// BIND 9.18 sends the reverse zones to their forwarders even under
	// its automatic empty zones (10.in-addr.arpa): nothing to turn off.
	b.WriteString("# In options { }: the zones are not signed, so validation must skip them\n")
	b.WriteString("# (with dnssec-validation auto, the default, their answers fail otherwise):\n")
	var quoted []string
	for _, z := range t.all() {
		quoted = append(quoted, fmt.Sprintf("%q;", z))
	}
	fmt.Fprintf(b, "#   validate-except { %s };\n", strings.Join(quoted, " "))
}

func routedText(b *strings.Builder, t dnsTargets) {
	b.WriteString("## A host routed through this one (routed_clients): its resolver forwards\n")
	b.WriteString("## the zones to an address of this host that it reaches.\n")
	var reachable []netip.AddrPort
	wildcard := false
	for _, a := range t.Listen {
		switch {
		case a.Addr().IsUnspecified():
			wildcard = true
		case !a.Addr().IsLoopback():
			reachable = append(reachable, a)
		}
	}
	if !t.Routed {
		b.WriteString("# routed_clients is not set: routed hosts do not reach the services, so\n")
		b.WriteString("# their names would lead nowhere. Set it first (docs/configuration.md).\n")
	}
	switch {
	case len(reachable) > 0:
		fmt.Fprintf(b, "# For dnsmasq there; unbound and BIND as above, with %s:\n", joinAddrs(reachable, " or "))
		dnsmasqLines(b, t.all(), reachable)
		b.WriteString("# Let the routed hosts' queries in: UDP and TCP to that port, from routed_clients.\n")
	case wildcard:
		b.WriteString("# The server listens on every address: point the routed host at this host's\n")
		b.WriteString("# address on the network they share, as dnsmasq there:\n")
		for _, z := range t.all() {
			fmt.Fprintf(b, "#   server=/%s/ADDRESS-OF-THIS-HOST#%d\n", z, t.Listen[0].Port())
		}
	default:
		b.WriteString("# Every listen address is loopback, which no other host reaches: add one\n")
		b.WriteString("# of this host's addresses on the routed network to [dns] listen, like\n")
		fmt.Fprintf(b, "#   listen = [%q, \"ADDRESS-OF-THIS-HOST:53\"]\n", t.Listen[0].String())
		b.WriteString("# then run kube-outpost dns-config again.\n")
	}
}
