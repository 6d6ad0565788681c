package status

import (
	"cmp"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// ClusterFromModel fills the model's side of a cluster's status: whether it
// synced, what it programs, and what it refuses (refusals of every cluster
// may be given; only c's are taken). The daemon adds the apiserver's side.
func ClusterFromModel(c *model.ClusterState, refusals []model.Refusal) ClusterStatus {
	cs := ClusterStatus{Name: c.Name, Synced: c.Synced, LastKnownStateFrom: c.LastKnown, Refused: []Refusal{}}
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
			cs.Refused = append(cs.Refused, Refusal{Namespace: r.Namespace, Name: r.Name, Reason: bound(r.Reason)})
		}
	}
	return cs
}

// maxBusiest is how many ports a cluster's status names as its busiest.
const maxBusiest = 5

// AddConnections fills each cluster's Connections and Busiest from the
// kernel's counts per port; ports that made no connection are not named.
func (r *Report) AddConnections(counts map[model.PortKey]uint64) {
	for i := range r.Clusters {
		c := &r.Clusters[i]
		var total uint64
		var busiest []PortConnections
		for k, n := range counts {
			if k.Cluster != c.Name {
				continue
			}
			total += n
			if n > 0 {
				busiest = append(busiest, PortConnections{Port: strings.TrimPrefix(k.String(), k.Cluster+"/"), Connections: n})
			}
		}
		// Most first; a tie by name, so that the same counts read the same.
		slices.SortFunc(busiest, func(a, b PortConnections) int {
			return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(a.Port, b.Port))
		})
		c.Connections, c.Busiest = &total, busiest[:min(len(busiest), maxBusiest)]
	}
}

// boundTexts returns r with the texts bounded that a cluster or the network
// writes at any length: apiserver errors, sync errors (which quote the
// tools' output), routes' reasons. Refusal reasons are bounded as they are
// taken from the model.
func (r Report) boundTexts() Report {
	r.LastSync.Error = bound(r.LastSync.Error)
	r.LastSuccess.Error = bound(r.LastSuccess.Error)
	r.Warnings = boundAll(r.Warnings)
	r.Clusters = slices.Clone(r.Clusters)
	for i := range r.Clusters {
		c := &r.Clusters[i]
		c.LastError = bound(c.LastError)
		c.StateSaveError = bound(c.StateSaveError)
		if c.Nodes != nil {
			n := *c.Nodes
			n.LastError = bound(n.LastError)
			c.Nodes = &n
		}
		if c.Routes != nil {
			rt := *c.Routes
			rt.Refused = boundAll(rt.Refused)
			rt.Problems = boundAll(rt.Problems)
			c.Routes = &rt
		}
	}
	return r
}

func boundAll(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = bound(s)
	}
	return out
}
