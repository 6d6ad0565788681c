package hostcheck

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// The addresses below are not a cluster's to decide: whatever a cluster's
// objects say, no service address, endpoint, external IP or route may lead
// traffic for them anywhere else. They are read from the host (its default
// gateways and resolvers) and from the config (the apiservers).

// Gateways are the next hops of the default routes among routes, sorted and
// unique: the host's way off its networks.
func Gateways(routes []Route) []netip.Addr {
	var out []netip.Addr
	for _, r := range routes {
		if r.Dst.Bits() == 0 && r.Gateway.IsValid() {
			out = append(out, r.Gateway.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// DefaultResolvConf is where the host's resolvers are configured.
const DefaultResolvConf = "/etc/resolv.conf"

// Resolvers are the nameserver addresses of a resolv.conf, sorted and
// unique; a missing or unreadable file has none. systemd-resolved's stub
// (127.0.0.53) is loopback, which no cluster can reach anyway; its
// upstream servers are in /run/systemd/resolve/resolv.conf, which callers
// read too.
func Resolvers(paths ...string) []netip.Addr {
	var out []netip.Addr
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		out = append(out, parseResolvConf(data)...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func parseResolvConf(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if ip, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, ip.Unmap().WithZone(""))
		}
	}
	return out
}

// HostResolvers are the resolvers of this host: /etc/resolv.conf's and,
// behind systemd-resolved's stub, its upstream servers.
func HostResolvers() []netip.Addr {
	return Resolvers(DefaultResolvConf, "/run/systemd/resolve/resolv.conf")
}

// APIServerAddr is config.APIServerAddr, beside the other protected
// addresses.
func APIServerAddr(server string) (netip.Addr, bool) { return config.APIServerAddr(server) }
