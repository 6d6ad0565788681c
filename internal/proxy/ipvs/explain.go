package ipvs

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// PortView is what the kernel holds for one ClusterIP:port/protocol in ipvs
// mode, read back for `kube-outpost explain`. It only reads.
type PortView struct {
	// Bound says whether the ClusterIP is on outpost0: only then is it a
	// local address, which IPVS needs to receive the packets.
	Bound bool
	// Server is the virtual server with its destinations, their weights
	// and connection counts; nil when IPVS has none for the port.
	Server *VirtualServer
}

// ReadPort reads the virtual server of vip over proto, and whether vip is
// bound to outpost0. It never loads ip_vs: without it, IPVS holds nothing.
func ReadPort(k Kernel, vip netip.AddrPort, proto model.Protocol) (*PortView, error) {
	addrs, err := k.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("reading the addresses of %s: %w", Interface, err)
	}
	// List has no filter: the whole table it is, which explain can afford.
	vss, err := k.List()
	if err != nil {
		return nil, fmt.Errorf("reading the IPVS virtual servers: %w", err)
	}
	v := &PortView{Bound: slices.Contains(addrs, vip.Addr())}
	want := ServiceKey{VIP: vip.Addr(), Port: vip.Port(), Protocol: proto}
	for i := range vss {
		if vss[i].ServiceKey == want {
			vs := vss[i]
			vs.Destinations = slices.Clone(vs.Destinations)
			slices.SortFunc(vs.Destinations, func(a, b Destination) int { return a.Addr.Compare(b.Addr) })
			v.Server = &vs
			break
		}
	}
	return v, nil
}
