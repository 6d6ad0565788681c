// Package status is what `kube-outpost status` and `kube-outpost explain`
// need: the answers' wire types, a server that a running daemon offers on a
// root-only unix socket, the client of that socket, the text an operator
// reads, and BuildExplanation, which puts the model's desired state next to
// what the kernel really holds, so that a difference between them shows.
//
// The daemon answers from what it has in memory and from the kernel; it
// never asks an apiserver, so status works while a cluster is down.
package status

import (
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// Report is the answer to GET /status.
type Report struct {
	Mode string `json:"mode"`
	// ModeChoice says why mode = "auto" chose Mode; empty for a mode
	// the config names.
	ModeChoice string    `json:"mode_choice,omitempty"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
	// LastSync is the last sync attempt, successful or not; its At is zero
	// before the first one.
	LastSync Sync `json:"last_sync"`
	// LastSuccess is the last successful sync, zero before the first.
	LastSuccess Sync `json:"last_successful_sync"`
	// Warnings are what is wrong on this host that a sync cannot fix,
	// from the datapath (a sysctl reset behind the daemon's back).
	Warnings []string `json:"warnings,omitempty"`
	// Datapath is the kernel objects of a mode whose rules no rule
	// listing shows (ebpf: programs on hooks, map fill); nil in the
	// others.
	Datapath *proxy.Datapath `json:"datapath,omitempty"`
	Clusters []ClusterStatus `json:"clusters"`
	// DNS is the DNS server's state; nil without [dns].
	DNS *DNS `json:"dns,omitempty"`
}

// Sync is one sync of the kernel rules.
type Sync struct {
	At       time.Time `json:"at,omitzero"`
	Duration Duration  `json:"duration_seconds"`
	// Full: every rule was rewritten, not only what changed.
	Full  bool   `json:"full"`
	Error string `json:"error,omitempty"`
}

// ClusterStatus is one configured cluster.
type ClusterStatus struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	// Reachable: the apiserver answered the last request. False with no
	// LastError means it has not been asked yet.
	Reachable bool `json:"reachable"`
	// UnreachableSince is when the current outage began; zero while
	// reachable, or when the daemon cannot tell.
	UnreachableSince time.Time `json:"unreachable_since,omitzero"`
	LastError        string    `json:"last_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	// LastHeard is the oldest, over the cluster's watches, of the last
	// word from its apiserver: an answer, an event or a bookmark, which it
	// sends each watch about every minute. A watch silent for 90 s is
	// made again.
	LastHeard time.Time `json:"last_heard,omitzero"`
	// Synced: the informers have listed everything once, so the cluster's
	// rules are this run's. Until then the rules of an earlier run stay,
	// or its last known state is served.
	Synced bool `json:"synced"`
	// LastKnownStateFrom, while the cluster has not synced, is when the
	// state its rules are programmed from was saved, by an earlier run
	// (state_dir); zero when it serves none.
	LastKnownStateFrom time.Time `json:"last_known_state_from,omitzero"`
	// StateSavedAt is when this run last saved the cluster's state to
	// state_dir, zero before the first time or when none is kept;
	// StateSaveError is the last attempt's error.
	StateSavedAt   time.Time `json:"state_saved_at,omitzero"`
	StateSaveError string    `json:"state_save_error,omitempty"`
	// Services and ServicePorts are those with a ClusterIP that is
	// programmed; Endpoints counts endpoints over all ports, as DNAT
	// targets or real servers.
	Services     int `json:"services"`
	ServicePorts int `json:"service_ports"`
	Endpoints    int `json:"endpoints"`
	// PortsWithoutEndpoints are refused (TCP reset, ICMP unreachable).
	PortsWithoutEndpoints int `json:"ports_without_endpoints"`
	// Connections are the new connections made through this host to the
	// cluster's service ports since their rules were written, in a mode
	// that counts them in the kernel (nftables); nil in the others.
	// Busiest are the ports with the most, at most maxBusiest of them.
	Connections *uint64           `json:"new_connections,omitempty"`
	Busiest     []PortConnections `json:"busiest_ports,omitempty"`
	Refused     []Refusal         `json:"refused"`
	// LocalRanges say where this host reaches the cluster's ClusterIPs
	// when local_service_cidr maps them; none when it does not.
	LocalRanges []LocalRange `json:"local_ranges,omitempty"`
	// AllowExternalIPs are the ranges its external IPs may be captured in.
	AllowExternalIPs []string `json:"allow_external_ips,omitempty"`
	// Reach is how this host reaches the cluster's endpoints: "direct",
	// "nodeport" or "routes".
	Reach string `json:"reach,omitempty"`
	// NodeAddressTypes is the preference among node addresses of a
	// cluster reached through its nodes.
	NodeAddressTypes []string `json:"node_address_types,omitempty"`
	// Nodes is the node watch of a cluster reached through its nodes;
	// nil with reach = "direct", which does not list nodes.
	Nodes *NodeWatch `json:"nodes,omitempty"`
	// Routes are the routes of a cluster with reach = "routes"; nil
	// before the first route sync and for the other strategies.
	Routes *Routes `json:"routes,omitempty"`
}

// PortConnections is one service port's count of new connections.
type PortConnections struct {
	Port        string `json:"port"` // namespace/name:port, as in PortKey
	Connections uint64 `json:"new_connections"`
}

// NodeWatch is the state of a cluster's node list.
type NodeWatch struct {
	// Synced: every node was listed once. Before, a nodeport cluster
	// is not synced and no route of a routes cluster is changed.
	Synced bool `json:"synced"`
	Nodes  int  `json:"nodes"`
	// Ready nodes are the ones used; the others are skipped.
	Ready       int       `json:"ready"`
	WatchErrors int       `json:"watch_errors"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Routes are what reach = "routes" wants for a cluster's nodes, and what of
// it is not installed.
type Routes struct {
	// Wanted are the routes of the cluster's Ready nodes, "<pod CIDR> via
	// <node address>"; Installed is how many of them are.
	Wanted    []string `json:"wanted"`
	Installed int      `json:"installed"`
	// Refused are wanted routes that are not installed, with the reason.
	Refused []string `json:"refused,omitempty"`
	// Problems are pod CIDRs of Ready nodes that give no route at all.
	Problems []string `json:"problems,omitempty"`
}

// LocalRange is a service range of a cluster and the range of this host
// where its ClusterIPs are reached, at the same offset.
type LocalRange struct {
	ServiceCIDR string `json:"service_cidr"`
	LocalCIDR   string `json:"local_cidr"`
}

// Refusal is a service, or part of one, that is not programmed, and why.
type Refusal struct {
	Cluster   string `json:"cluster,omitempty"` // in an Explanation, which may span clusters
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
}

// Query is what to explain; see model.ParseQuery for its text form.
type Query = model.Query

// Explanation is the answer to GET /explain: what a packet to a service
// meets on this host.
type Explanation struct {
	Query string `json:"query"`
	Mode  string `json:"mode"`
	// Notes are what the operator should know first: a cluster not
	// synced, a service that only the kernel still has.
	Notes []string `json:"notes,omitempty"`
	// Refused are the model's problems with the services involved.
	Refused []Refusal         `json:"refused,omitempty"`
	Ports   []PortExplanation `json:"ports"`
}

// PortExplanation is one service port on one IP family.
type PortExplanation struct {
	// Key is the service port as rule comments and logs name it:
	// cluster/namespace/name:port.
	Key     string `json:"key"`
	Cluster string `json:"cluster"`
	Service string `json:"service"` // namespace/name
	// Target is the address:port/PROTOCOL that packets are sent to on
	// this host: the ClusterIP, its local mapping, or an external IP.
	Target string `json:"target"`
	// ClusterIP is the port's ClusterIP in its cluster when Target is
	// another address (local_service_cidr, or an external IP).
	ClusterIP string `json:"cluster_ip,omitempty"`
	// ExternalIPs are the port's external IPs on this host.
	ExternalIPs   []string `json:"external_ips,omitempty"`
	ClusterSynced bool     `json:"cluster_synced"`
	// ClusterLastKnownStateFrom is, while the cluster has not synced,
	// when the last known state the port comes from was saved.
	ClusterLastKnownStateFrom time.Time `json:"cluster_last_known_state_from,omitzero"`
	// InModel is false for a port that only the kernel has: rules an
	// earlier run or someone else left.
	InModel  bool     `json:"in_model"`
	Affinity Duration `json:"affinity_seconds"`
	// NoEndpointsReason says why Endpoints is empty.
	NoEndpointsReason string `json:"no_endpoints_reason,omitempty"`
	// Endpoints are the model's: the endpoints this host should balance
	// over, with the share each should get.
	Endpoints []Endpoint `json:"endpoints"`
	// Excluded are the endpoints of the service left out, with why.
	Excluded []Excluded `json:"excluded"`
	Kernel   KernelView `json:"kernel"`
	// Mismatches are the differences between the model and the kernel;
	// none when the kernel does what the model wants.
	Mismatches []string `json:"mismatches"`
	// Notes are differences that are expected, such as an endpoint
	// draining its connections.
	Notes []string `json:"notes,omitempty"`
}

// Endpoint is one endpoint the model wants.
type Endpoint struct {
	Addr netip.AddrPort `json:"addr"`
	// Terminating: used only because no endpoint is ready.
	Terminating bool `json:"terminating,omitempty"`
	// Probability or Weight, whichever the mode divides new connections
	// by, is the share it should get.
	Probability float64 `json:"probability,omitempty"`
	Weight      int     `json:"weight,omitempty"`
}

// Excluded is an endpoint left out, as model.ExcludedEndpoint.
type Excluded struct {
	Addr   string `json:"addr"`
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

// KernelView is what the kernel holds for the port, as the daemon's mode
// reads it back.
type KernelView struct {
	// Mode is the mode that read it, which gives Detail its shape.
	Mode string `json:"mode"`
	// Error is set when the kernel could not be read; nothing else is.
	Error string `json:"error,omitempty"`
	// Lines are the kernel's objects for the port as the mode's tools
	// print them (iptables rules, an IPVS virtual server), for people.
	Lines []string `json:"lines"`
	// Endpoints are where the kernel sends new connections, with the
	// probability or weight each gets, and connection counts where the
	// mode keeps them.
	Endpoints []proxy.KernelEndpoint `json:"endpoints"`
	// Empty: the kernel holds nothing for the port, neither a way to its
	// endpoints nor a refusal.
	Empty bool `json:"empty"`
	// Detail is the mode's own view, for scripts that know the mode:
	// iptables.ExplainDetail, ipvs.ExplainDetail.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Duration is a time.Duration that JSON writes as seconds, which scripts
// read more easily than nanoseconds.
type Duration time.Duration

// Std is d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'f', -1, 64), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(math.Round(s * float64(time.Second)))
	return nil
}
