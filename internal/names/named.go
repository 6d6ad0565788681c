package names

import (
	"net/netip"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// addNamed indexes a headless or ExternalName service under zone (fully
// qualified), as CoreDNS's kubernetes plugin names them: the service's
// name holds every endpoint's address, and each endpoint has a name of
// its own under it, its hostname or else its address with dashes
// (10-0-1-7), which the SRV records of the service's named ports point
// at. Endpoint addresses get no PTR: they are outside the service ranges
// whose reverse names are ours.
func (ix *Index) addNamed(cluster string, n *model.NamedService, zone string) {
	what := cluster + "/" + n.Namespace + "/" + n.Name
	host, ok := ix.service(n.Namespace, n.Name, zone, what)
	if !ok {
		return
	}
	if n.ExternalName != "" {
		ix.cname[host] = n.ExternalName + "."
		return
	}
	for _, e := range n.Endpoints {
		ix.hosts[host] = append(ix.hosts[host], e.Addr)
		own := e.Hostname
		if own != "" && !label(own) {
			ix.skip(what + " endpoint " + e.Addr.String())
			own = ""
		}
		if own == "" {
			own = dashed(e.Addr)
		}
		own += "." + host
		ix.names[own] = true
		ix.hosts[own] = append(ix.hosts[own], e.Addr)
		for _, p := range e.Ports {
			ix.addSRV(host, p.Name, p.Protocol, srvTarget{p.Port, own}, what+":"+p.Name)
		}
	}
}

// dashed is an address as one label: its text with dashes for the dots or
// colons, as CoreDNS names an endpoint without a hostname.
func dashed(a netip.Addr) string {
	return strings.NewReplacer(".", "-", ":", "-").Replace(a.String())
}
