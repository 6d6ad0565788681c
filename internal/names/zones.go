package names

import (
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// ZonesOf are the forward zones of clusters, by name: each one's
// dns_zone, and cluster.local for the one with dns_default.
func ZonesOf(clusters []config.Cluster) Zones {
	zones := Zones{}
	for _, c := range clusters {
		zones[c.Name] = append(zones[c.Name], c.DNSZone)
		if c.DNSDefault {
			zones[c.Name] = append(zones[c.Name], config.ClusterLocal)
		}
	}
	return zones
}

// ReverseZonesOf are the reverse zones whose names the server answers
// for c: those of the ranges its addresses are reached at, the local
// range in place of the service range it maps.
func ReverseZonesOf(c config.Cluster) []string {
	return ReverseZones((&model.ClusterState{ServiceCIDRs: c.ServiceCIDRs, LocalServiceCIDR: c.LocalServiceCIDR}).Ranges())
}
