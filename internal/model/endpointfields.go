package model

import discoveryv1 "k8s.io/api/discovery/v1"

// EndpointsRead copies eps into a slice of exactly their number, each
// with only the fields the model reads: addresses, conditions, nodeName
// (reach = "nodeport" with externalTrafficPolicy: Local sends only to
// the nodes that hold endpoints) and hostname (a headless service's
// per-endpoint names, named.go). What it drops (the pod reference, zone,
// hints) is most of an endpoint a cluster sends, and a decoded slice's
// endpoints have up to twice their number in capacity: the informers and
// the kept last state hold the copy instead.
func EndpointsRead(eps []discoveryv1.Endpoint) []discoveryv1.Endpoint {
	if eps == nil {
		return nil
	}
	out := make([]discoveryv1.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = discoveryv1.Endpoint{Addresses: ep.Addresses, Conditions: ep.Conditions, NodeName: ep.NodeName, Hostname: ep.Hostname}
	}
	return out
}
