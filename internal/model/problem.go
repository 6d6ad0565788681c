package model

import (
	"fmt"
	"strings"
)

// RefusalReason classifies a problem for metrics: a small fixed set of
// label values, never a problem's text, which names objects and addresses.
type RefusalReason string

const (
	ReasonExternalIPs         RefusalReason = "external_ips"
	ReasonOutsideServiceCIDRs RefusalReason = "outside_service_cidrs"
	ReasonInvalidClusterIP    RefusalReason = "invalid_cluster_ip"
	ReasonUnsupportedProtocol RefusalReason = "unsupported_protocol"
	ReasonInvalidPort         RefusalReason = "invalid_port"
	ReasonDuplicatePort       RefusalReason = "duplicate_port"
	ReasonInvalidEndpoint     RefusalReason = "invalid_endpoint"
	ReasonUnsafeEndpoint      RefusalReason = "unsafe_endpoint"
	// ReasonOutsideEndpointCIDRs: an endpoint outside the cluster's
	// endpoint_cidrs.
	ReasonOutsideEndpointCIDRs RefusalReason = "outside_endpoint_cidrs"
	// ReasonConflict: another service, of this cluster or another, holds
	// the same address, port and protocol on this host.
	ReasonConflict RefusalReason = "conflict"
	// ReasonNodePortConflict: another cluster's service is served at the
	// same node port and protocol on this host (serve_node_ports).
	ReasonNodePortConflict RefusalReason = "node_port_conflict"
	// ReasonNodePortInUse: a local process listens on the node port.
	ReasonNodePortInUse RefusalReason = "node_port_in_use"
	// ReasonNoNodePort: a service port without a nodePort in a cluster
	// with reach = "nodeport", which cannot carry it.
	ReasonNoNodePort RefusalReason = "no_node_port"
	// ReasonProtectedAddress: a ClusterIP whose address on this host is
	// one no cluster may take: this host's own, its default gateway, a
	// configured cluster's apiserver, or a special or platform address.
	ReasonProtectedAddress RefusalReason = "protected_address"
	// ReasonTooManyPorts: a service with more ports than one may have.
	ReasonTooManyPorts RefusalReason = "too_many_ports"
	// ReasonExternalName: an ExternalName service whose target is no
	// host name outside our DNS zones (named.go): no CNAME.
	ReasonExternalName RefusalReason = "external_name"
	// ReasonOther counts a problem made without a reason, which would be
	// a bug: every problem names its reason where it is decided.
	ReasonOther RefusalReason = "other"
)

// Problem is one thing wrong with an object that the model refused, in
// whole or in part: the reason it is counted under (metrics) and the
// message the warning and status give. It is made where the refusal is
// decided, so the reason never has to be read back from the words.
type Problem struct {
	Reason RefusalReason
	Msg    string
}

// String is the message, so that %s and %q print problems as before.
func (p Problem) String() string { return p.Msg }

// problemf makes a Problem of reason r.
func problemf(r RefusalReason, format string, args ...any) Problem {
	return Problem{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// dedupe drops the problems whose message came before: the same bad
// endpoint used by several ports is one problem.
func dedupe(in []Problem) []Problem {
	seen := map[string]bool{}
	out := in[:0]
	for _, p := range in {
		if !seen[p.Msg] {
			seen[p.Msg] = true
			out = append(out, p)
		}
	}
	return out
}

// messages are the problems' messages, in order.
func messages(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Msg
	}
	return out
}

// joinProblems is the problems as one text, for the warning and status.
func joinProblems(ps []Problem) string { return joinMessages(messages(ps)) }

func joinMessages(ms []string) string { return strings.Join(ms, "; ") }
