package status

import (
	"github.com/kube-outpost/kube-outpost/internal/model"
)

// ClusterFromModel fills the model's side of a cluster's status: whether it
// synced, what it programs, and what it refuses (refusals of every cluster
// may be given; only c's are taken). The daemon adds the apiserver's side.
func ClusterFromModel(c *model.ClusterState, refusals []model.Refusal) ClusterStatus {
	cs := ClusterStatus{Name: c.Name, Synced: c.Synced, Refused: []Refusal{}}
	services := map[[2]string]bool{}
	for k, p := range c.Ports {
		services[[2]string{k.Namespace, k.Name}] = true
		cs.ServicePorts++
		cs.Endpoints += len(p.Endpoints)
		if len(p.Endpoints) == 0 {
			cs.PortsWithoutEndpoints++
		}
	}
	cs.Services = len(services)
	if from := c.MappedCIDR(); from.IsValid() {
		cs.LocalRanges = append(cs.LocalRanges, LocalRange{ServiceCIDR: from.String(), LocalCIDR: c.LocalServiceCIDR.String()})
	}
	for _, p := range c.AllowExternalIPs {
		cs.AllowExternalIPs = append(cs.AllowExternalIPs, p.String())
	}
	for _, r := range refusals {
		if r.Cluster == c.Name {
			cs.Refused = append(cs.Refused, Refusal{Namespace: r.Namespace, Name: r.Name, Reason: r.Reason})
		}
	}
	return cs
}
