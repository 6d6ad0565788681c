package proxy

import (
	"context"
	"net/netip"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Explainer reads back what a mode programmed for one service port and
// says how it differs from what the mode would program for the model.
// It only reads, and never loads a module to do so.
type Explainer interface {
	// Share is how the mode divides new connections among n endpoints:
	// the probability or the weight it gives each, whichever it uses.
	Share(n int) EndpointShare
	// ExplainPort reads the kernel for want.Target. want.Key is nil when
	// the model has no such port (rules an earlier run left behind).
	ExplainPort(ctx context.Context, want Want) (PortView, error)
}

// Want is the model's side of one service port, as an explainer compares
// the kernel with it.
type Want struct {
	// Key is the model's port; nil when the model has none at Target.
	Key *model.PortKey
	// Target is the address and port asked about: the ClusterIP, an
	// external IP or a node port; Protocol its protocol.
	Target   netip.AddrPort
	Protocol model.Protocol
	// Endpoints are where the model wants new connections to go, each
	// with the share Explainer.Share gave it; none means refuse.
	Endpoints []WantEndpoint
	Affinity  time.Duration
}

// PortWant is the Want for the model's port sp reached at addr (its VIP,
// or an external IP), with the shares ex gives its endpoints.
func PortWant(ex Explainer, sp *model.ServicePort, addr netip.Addr) Want {
	w := Want{Key: &sp.Key, Target: netip.AddrPortFrom(addr, sp.Port), Protocol: sp.Key.Protocol, Affinity: sp.Affinity}
	for _, e := range sp.Endpoints {
		w.Endpoints = append(w.Endpoints, WantEndpoint{Addr: e.Addr, EndpointShare: ex.Share(len(sp.Endpoints))})
	}
	return w
}

// WantEndpoint is one endpoint the model wants.
type WantEndpoint struct {
	Addr netip.AddrPort
	EndpointShare
}

// EndpointShare is the part of new connections an endpoint gets: a
// probability (iptables' statistic ladder) or a weight (IPVS), whichever
// the mode uses; the other is zero.
type EndpointShare struct {
	Probability float64 `json:"probability,omitempty"`
	Weight      int     `json:"weight,omitempty"`
}

// PortView is what a mode found in the kernel for one service port.
type PortView struct {
	// Lines are the kernel's objects for the port as the mode's tools
	// print them, in the order a packet meets them, for people.
	Lines []string
	// Endpoints are where the kernel sends new connections.
	Endpoints []KernelEndpoint
	// Empty: the kernel holds nothing for the port, neither a way to its
	// endpoints nor a refusal.
	Empty bool
	// Mismatches are how the kernel differs from what the mode would
	// program for want; none when they agree.
	Mismatches []string
	// Notes are expected differences, such as an endpoint draining.
	Notes []string
	// Detail is the mode's own structured view, JSON-tagged: explain's
	// JSON carries it as the port's kernel.detail, for scripts that know
	// the mode.
	Detail any
}

// KernelEndpoint is one place the kernel sends new connections of a port.
type KernelEndpoint struct {
	Addr netip.AddrPort `json:"addr"`
	EndpointShare
	// Conns is the connection count where the mode keeps one ("3 active,
	// 1 inactive"); empty where it does not.
	Conns string `json:"conns,omitempty"`
}
