package ipvs

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// inputVerdict walks a new connection through filter INPUT and the chains
// it jumps to, as the kernel would before IPVS sees the packet: "DROP",
// "REJECT <with>", or "" when it passes on to IPVS (or the host). It reads
// the sets from the fake ipset; a match it does not know fails the test.
func (e *env) inputVerdict(src, dst, proto string, port uint16) string {
	e.t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	local := s.IsLoopback() || slices.Contains(npHostAddrs, s)
	if addrs, err := e.k.InterfaceAddrs(); err == nil && slices.Contains(addrs, s) {
		local = true
	}
	member := func(name, dir string) bool {
		members := e.ips.Members(name)
		if members == nil {
			e.t.Fatalf("rule names set %s, which does not exist", name)
		}
		switch dir {
		case "dst":
			return slices.Contains(members, d.String())
		case "dst,dst":
			return slices.Contains(members, d.String()+","+proto+":"+itoa(port))
		case "src":
			for _, m := range members {
				p, err := netip.ParsePrefix(m)
				if err != nil {
					p = netip.PrefixFrom(netip.MustParseAddr(m), s.BitLen())
				}
				if p.Contains(s) {
					return true
				}
			}
			return false
		}
		e.t.Fatalf("set direction %q is not modelled", dir)
		return false
	}
	var walk func(chain string, depth int) (string, bool)
	walk = func(chain string, depth int) (string, bool) {
		if depth > 5 {
			e.t.Fatalf("chains nested too deep at %s", chain)
		}
		for _, r := range e.ipt.Rules("filter", chain) {
			toks := strings.Fields(commentRE.ReplaceAllString(r, ""))
			ok, target, with := true, "", ""
			for i := 0; i < len(toks); i++ {
				neg := false
				if toks[i] == "!" {
					neg, i = true, i+1
				}
				switch toks[i] {
				case "-p":
					i++
					ok = ok && (toks[i] == proto) != neg
				case "-m":
					i++ // the module; its options follow
				case "--ctstate":
					i++
					ok = ok && slices.Contains(strings.Split(toks[i], ","), "NEW") != neg
				case "--match-set":
					ok = ok && member(toks[i+1], toks[i+2]) != neg
					i += 2
				case "--src-type":
					i++
					if toks[i] != "LOCAL" {
						e.t.Fatalf("--src-type %s is not modelled", toks[i])
					}
					ok = ok && local != neg
				case "-j":
					i++
					target = toks[i]
				case "--reject-with":
					i++
					with = toks[i]
				case "conntrack", "set", "addrtype", "comment":
				default:
					e.t.Fatalf("%q in %q is not modelled", toks[i], r)
				}
			}
			if !ok {
				continue
			}
			switch target {
			case "DROP":
				return "DROP", true
			case "REJECT":
				if with == "" {
					with = "icmp-port-unreachable"
				}
				return "REJECT " + with, true
			case "ACCEPT":
				return "", true
			default:
				if v, done := walk(target, depth+1); done {
					return v, true
				}
			}
		}
		return "", false
	}
	v, _ := walk("INPUT", 0)
	return v
}

// commentRE is a rule's comment, which may hold blanks in quotes.
var commentRE = regexp.MustCompile(`--comment ("(?:[^"\\]|\\.)*"|\S+)`)

func itoa(n uint16) string { return strconv.Itoa(int(n)) }

var testRoutedClients = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:20::/64")}

// TestRoutedClientsIPv4: a routed client in routed_clients reaches the
// VIPs as a local process does; one outside is dropped before IPVS, even
// at a port without endpoints; node ports answer everyone; local
// processes are untouched.
func TestRoutedClientsIPv4(t *testing.T) {
	e := newNPEnv(t)
	e.opt.RoutedClients = testRoutedClients
	e.restart()
	e.sync(npState(), false)
	e.wantSet("OUTPOST-IPVS-CLIENTS", "10.20.0.0/16")
	for _, c := range []struct {
		name, src, dst, proto string
		port                  uint16
		want                  string
	}{
		{"routed client, VIP", "10.20.1.2", "10.96.0.10", "tcp", 80, ""},
		{"routed client, VIP without endpoints", "10.20.1.2", "10.96.0.30", "udp", 53, "REJECT icmp-port-unreachable"},
		{"routed client, another port of a VIP", "10.20.1.2", "10.96.0.10", "tcp", 22, "REJECT tcp-reset"},
		{"stranger, VIP", "203.0.113.9", "10.96.0.10", "tcp", 80, "DROP"},
		{"stranger, VIP without endpoints", "203.0.113.9", "10.96.0.30", "udp", 53, "DROP"},
		{"stranger, node port", "203.0.113.9", "10.250.0.2", "tcp", 30080, ""},
		{"stranger, node port without endpoints", "203.0.113.9", "10.250.0.2", "udp", 30053, "REJECT icmp-port-unreachable"},
		{"stranger, the host's own port", "203.0.113.9", "10.250.0.2", "tcp", 22, ""},
		{"local process, VIP", "10.250.0.2", "10.96.0.10", "tcp", 80, ""},
		{"local process from the VIP itself", "10.96.0.10", "10.96.0.10", "tcp", 80, ""},
		{"local process, VIP without endpoints", "10.250.0.2", "10.96.0.30", "udp", 53, "REJECT icmp-port-unreachable"},
	} {
		if got := e.inputVerdict(c.src, c.dst, c.proto, c.port); got != c.want {
			t.Errorf("%s: %s -> %s:%d/%s: %q, want %q", c.name, c.src, c.dst, c.port, c.proto, got, c.want)
		}
	}

	// Another list at the next start: the set follows.
	e.opt.RoutedClients = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.21.0.5/32")}
	e.restart()
	e.sync(npState(), false)
	e.wantSet("OUTPOST-IPVS-CLIENTS", "10.21.0.5/32", "203.0.113.0/24")
	if got := e.inputVerdict("10.20.1.2", "10.96.0.10", "tcp", 80); got != "DROP" {
		t.Errorf("a range no longer listed: %q, want DROP", got)
	}
	if got := e.inputVerdict("203.0.113.9", "10.96.0.10", "tcp", 80); got != "" {
		t.Errorf("a range now listed: %q, want it served", got)
	}
}

// TestNoRoutedClientsIPVS: without routed_clients, no routed packet
// reaches a VIP.
func TestNoRoutedClientsIPVS(t *testing.T) {
	e := newNPEnv(t)
	e.sync(npState(), false)
	e.wantSet("OUTPOST-IPVS-CLIENTS")
	if got := e.inputVerdict("10.20.1.2", "10.96.0.10", "tcp", 80); got != "DROP" {
		t.Errorf("routed packet to a VIP: %q, want DROP", got)
	}
	if got := e.inputVerdict("10.20.1.2", "10.250.0.2", "tcp", 30080); got != "" {
		t.Errorf("routed packet to a node port: %q, want it served", got)
	}
	if got := e.inputVerdict("10.250.0.2", "10.96.0.10", "tcp", 80); got != "" {
		t.Errorf("local process to a VIP: %q, want it served", got)
	}
}

// TestRoutedClientsIPv6: the IPv6 Proxier fills its own set with the
// IPv6 ranges only, and the rules work the same.
func TestRoutedClientsIPv6(t *testing.T) {
	e := newNPEnv(t)
	e.opt.IPv6 = true
	e.opt.RoutedClients = testRoutedClients
	e.restart()
	empty6 := svc("alpha", "default", "empty", "", model.TCP, "fd00:96::30", 80)
	e.sync(state(cluster("alpha", true, alphaCIDRs, web6, empty6)), false)
	e.wantSet("OUTPOST-IPVS-CLIENTS6", "fd00:20::/64")
	if m := e.ips.Members("OUTPOST-IPVS-CLIENTS"); m != nil {
		t.Errorf("the IPv6 Proxier wrote the IPv4 set: %q", m)
	}
	for _, c := range []struct {
		src, dst string
		port     uint16
		want     string
	}{
		{"fd00:20::5", "fd00:96::10", 80, ""},
		{"fd00:20::5", "fd00:96::30", 80, "REJECT tcp-reset"},
		{"2001:db8::9", "fd00:96::10", 80, "DROP"},
		{"2001:db8::9", "fd00:96::30", 80, "DROP"},
		{"fd00::2", "fd00:96::10", 80, ""},
	} {
		if got := e.inputVerdict(c.src, c.dst, "tcp", c.port); got != c.want {
			t.Errorf("%s -> [%s]:%d: %q, want %q", c.src, c.dst, c.port, got, c.want)
		}
	}
}
