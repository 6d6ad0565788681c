package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// defaultAffinityTimeout is the Kubernetes default for
// sessionAffinityConfig.clientIP.timeoutSeconds.
const defaultAffinityTimeout = 10800 * time.Second

// maxServicePorts bounds the ports of one service: each costs rules, and a
// Service with thousands of them is a mistake or an attack, which must not
// slow down every other service's sync.
const maxServicePorts = 1000

type buildResult struct {
	ports    []*ServicePort
	problems []Problem
}

// buildEnv is what buildService needs to know beyond its cluster: facts
// about this host and the other clusters (targets.go). nil means none.
type buildEnv struct {
	// host are this host's own addresses: an endpoint or external IP
	// there would turn a service into a way into this host.
	host map[netip.Addr]bool
	// gateways are the next hops of this host's default routes.
	gateways map[netip.Addr]bool
	// ranges are where each configured cluster's VIPs are on this host.
	ranges []ownedRange
	// apiservers are the configured clusters' apiserver addresses.
	apiservers []ownedAddr
	// zones are the DNS zones the clusters' names are answered in,
	// lowercase without the final dot, which no CNAME may point into.
	zones []string
}

type ownedRange struct {
	cluster string
	prefix  netip.Prefix
}

// buildService turns one Service and its EndpointSlices into ServicePorts.
// A nil svc (deleted, or slices seen before their service) yields nothing.
func buildService(cfg ClusterConfig, env *buildEnv, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) buildResult {
	var res buildResult
	if svc == nil || !proxied(svc) {
		return res
	}
	problem := func(r RefusalReason, format string, args ...any) {
		res.problems = append(res.problems, problemf(r, format, args...))
	}

	externals := externalIPs(cfg, env, svc, problem)
	mappedFrom := mappedCIDR(cfg.ServiceCIDRs, cfg.LocalServiceCIDR)
	svcPorts := svc.Spec.Ports
	if len(svcPorts) > maxServicePorts {
		problem(ReasonTooManyPorts, "spec.ports has %d ports: only the first %d are programmed", len(svcPorts), maxServicePorts)
		svcPorts = svcPorts[:maxServicePorts]
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
		if affinity <= 0 {
			affinity = defaultAffinityTimeout
		}
	}
	localOnly := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal

	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	families := map[bool]bool{}
	for i, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			problem(ReasonInvalidClusterIP, "spec.clusterIPs[%d] %q is not an IP address", i, s)
			continue
		}
		ip = ip.Unmap()
		if !inAny(cfg.ServiceCIDRs, ip) {
			problem(ReasonOutsideServiceCIDRs, "spec.clusterIPs[%d] %s is outside the cluster's service_cidrs %v: refused", i, ip, cfg.ServiceCIDRs)
			continue
		}
		if families[ip.Is6()] {
			// Two ClusterIPs of one family: only a broken object has them,
			// and both would be the same PortKeys.
			problem(ReasonInvalidClusterIP, "spec.clusterIPs[%d] %s: a second ClusterIP of its family: refused", i, ip)
			continue
		}
		families[ip.Is6()] = true
		var local netip.Addr
		if mappedFrom.IsValid() && mappedFrom.Contains(ip) {
			local = mapAddr(ip, mappedFrom, cfg.LocalServiceCIDR)
		}
		if why := env.protected(cmp.Or(local, ip)); why != "" {
			// A VIP is captured whole in ipvs mode (bound to outpost0,
			// every other port rejected) and per port in iptables mode,
			// for local and routed traffic alike.
			at := "is"
			if local.IsValid() {
				at = fmt.Sprintf("is reached at %s on this host, which is", local)
			}
			problem(ReasonProtectedAddress, "spec.clusterIPs[%d] %s %s %s: refused%s", i, ip, at, why, protectedSuffix)
			continue
		}
		var exts []netip.Addr
		for _, e := range externals {
			if e.Is6() == ip.Is6() {
				exts = append(exts, e)
			}
		}
		seen := map[string]bool{}
		for j, sp := range svcPorts {
			proto := Protocol(sp.Protocol)
			if proto == "" {
				proto = TCP
			}
			field := fmt.Sprintf("spec.ports[%d]", j)
			switch {
			case proto != TCP && proto != UDP && proto != SCTP:
				problem(ReasonUnsupportedProtocol, "%s: protocol %q is not supported", field, sp.Protocol)
				continue
			case sp.Port < 1 || sp.Port > 65535:
				problem(ReasonInvalidPort, "%s: port %d is out of range", field, sp.Port)
				continue
			}
			id := fmt.Sprintf("%s/%s", sp.Name, proto)
			if seen[id] {
				problem(ReasonDuplicatePort, "%s: duplicate port name %q for %s", field, sp.Name, proto)
				continue
			}
			seen[id] = true
			p := &ServicePort{
				Key: PortKey{
					Cluster: cfg.Name, Namespace: svc.Namespace, Name: svc.Name,
					Port: sp.Name, Protocol: proto, IPv6: ip.Is6(),
				},
				ClusterIP:   ip,
				LocalIP:     local,
				ExternalIPs: exts,
				Port:        uint16(sp.Port),
				Affinity:    affinity,
			}
			if sp.NodePort > 0 && sp.NodePort <= 65535 {
				p.NodePort = uint16(sp.NodePort)
			}
			if cfg.ServeNodePorts {
				p.ServedNodePort = p.NodePort // settled against other claims in nodeports.go
			}
			sel := selectEndpoints(cfg, env, sp.Name, proto, ip.Is6(), slices)
			if !localOnly {
				sel = capEndpoints(cfg, field, sel) // limits.go
			}
			if localOnly {
				// Every endpoint is filtered out, and nothing about them is
				// reported: none of them is ever used.
				p.NoEndpointsReason = "internalTrafficPolicy is Local, and an outside host has no node-local endpoints"
				p.Excluded = filtered(sel)
			} else {
				p.Endpoints, p.NoEndpointsReason, p.Excluded = sel.endpoints, sel.reason, sel.excluded
				res.problems = append(res.problems, sel.problems...)
			}
			res.ports = append(res.ports, p)
		}
	}
	for _, e := range externals {
		if !families[e.Is6()] {
			problem(ReasonExternalIPs, "external IP %s: the service has no ClusterIP of its family to lead it to: not programmed", e)
		}
	}
	res.problems = dedupe(res.problems)
	return res
}

// externalIPs are the service's external IPs (spec.externalIPs, and the
// IPs of status.loadBalancer.ingress) that this host may capture, sorted
// and unique. Anyone who can edit a Service, or its status, can set them
// (CVE-2020-8554), so only those inside the cluster's allow_external_ips
// are taken, and never one that is protected (targets.go: a special or
// platform address, this host's own, its default gateway, a configured
// cluster's apiserver) or in any cluster's service range on this host.
func externalIPs(cfg ClusterConfig, env *buildEnv, svc *corev1.Service, add func(RefusalReason, string, ...any)) []netip.Addr {
	// Every problem here is about external IPs.
	problem := func(format string, args ...any) { add(ReasonExternalIPs, format, args...) }
	var out []netip.Addr
	var refused []string
	take := func(field, s string) {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			problem("%s %q is not an IP address: not programmed", field, s)
			return
		}
		ip = ip.Unmap()
		if !inAny(cfg.AllowExternalIPs, ip) {
			refused = append(refused, ip.String())
			return
		}
		if why := env.protected(ip); why != "" {
			problem("%s %s is %s: never programmed%s", field, ip, why, protectedSuffix)
			return
		}
		if env != nil {
			for _, r := range env.ranges {
				if r.prefix.Contains(ip) {
					problem("%s %s is in cluster %q's service range %s on this host: not programmed", field, ip, r.cluster, r.prefix)
					return
				}
			}
		}
		out = append(out, ip)
	}
	for i, s := range svc.Spec.ExternalIPs {
		take(fmt.Sprintf("spec.externalIPs[%d]", i), s)
	}
	if len(refused) > 0 {
		problem("spec.externalIPs %v are not programmed: external IPs would let a namespace owner capture this host's traffic%s", refused, allowHint(cfg))
	}
	refused = nil
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		// ipMode Proxy: the load balancer proxies, so the IP is not
		// the destination of the packets (kube-proxy skips it too).
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
			continue
		}
		take(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), ing.IP)
	}
	// Without allow_external_ips, a LoadBalancer's IP is the cloud's, reached
	// through the cloud: not taking it is the normal case, not worth a
	// warning on every LoadBalancer service. With it, the operator opted
	// in and wants to know which ones stay out.
	if len(refused) > 0 && len(cfg.AllowExternalIPs) > 0 {
		problem("status.loadBalancer.ingress IPs %v are not programmed: outside allow_external_ips %v", refused, cfg.AllowExternalIPs)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func allowHint(cfg ClusterConfig) string {
	if len(cfg.AllowExternalIPs) == 0 {
		return " (allow_external_ips is not set)"
	}
	return fmt.Sprintf(" (outside allow_external_ips %v)", cfg.AllowExternalIPs)
}

// proxied says whether kube-proxy would program this service at all.
func proxied(svc *corev1.Service) bool {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return false
	}
	if _, ok := svc.Labels["service.kubernetes.io/service-proxy-name"]; ok {
		return false
	}
	if _, ok := svc.Labels[corev1.IsHeadlessService]; ok {
		return false
	}
	return true
}

type candidate struct {
	ready, serving, terminating bool
}

// rank orders candidates: 2 usable as ready, 1 usable only as the
// terminating fallback, 0 unusable. Like kube-proxy, a ready endpoint counts
// as ready even when terminating (publishNotReadyAddresses sets both).
func (c candidate) rank() int {
	switch {
	case c.ready:
		return 2
	case c.serving && c.terminating:
		return 1
	}
	return 0
}

// selection is what selectEndpoints decided for one service port.
type selection struct {
	endpoints []Endpoint
	reason    string // why endpoints is empty
	// excluded are the endpoints left out, with the reason: the same
	// decisions that chose endpoints, recorded where they are made.
	excluded []ExcludedEndpoint
	problems []Problem
}

// selectEndpoints picks the usable endpoints of one service port, following
// kube-proxy: ready endpoints; when none is ready, those that are terminating
// but still serving. Addresses that checkTarget refuses are dropped and
// reported.
func selectEndpoints(cfg ClusterConfig, env *buildEnv, portName string, proto Protocol, v6 bool, slices []*discoveryv1.EndpointSlice) selection {
	want := discoveryv1.AddressTypeIPv4
	if v6 {
		want = discoveryv1.AddressTypeIPv6
	}
	var sel selection
	var dropped []ExcludedEndpoint
	drop := func(addr string, port uint16, r Exclusion, detail string) {
		dropped = append(dropped, ExcludedEndpoint{Address: addr, Port: port, Reason: r, Detail: detail})
	}
	cands := map[netip.AddrPort]candidate{}
	for _, es := range slices {
		// Slices of the other family or FQDN slices are not this port's:
		// the other family's port lists their endpoints.
		if es.AddressType != want {
			continue
		}
		port, noPort := slicePort(es, portName, proto)
		if noPort != "" {
			for _, ep := range es.Endpoints {
				if len(ep.Addresses) > 0 {
					drop(normalized(ep.Addresses[0]), 0, ExcludedNoPort, noPort)
				}
			}
			continue
		}
		for i, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			ck := checkEndpoint(cfg, env, es, i, v6)
			if ck.problem.Msg != "" {
				sel.problems = append(sel.problems, ck.problem)
			}
			if ck.reason != "" {
				drop(ck.addr, port, ck.reason, ck.detail)
				continue
			}
			ip := ck.ip
			c := candidate{
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			ap := netip.AddrPortFrom(ip, port)
			// The same endpoint in two slices (during a slice split), or an
			// IP reused by a new pod while the old one terminates: keep the
			// best condition, as kube-proxy does.
			if old, ok := cands[ap]; !ok || c.rank() > old.rank() {
				cands[ap] = c
			}
		}
	}
	// Sized for the usual case, every endpoint ready: this slice is
	// what the model keeps of each port, and append's doubling would
	// leave a third of it unused.
	ready := make([]Endpoint, 0, len(cands))
	var fallback []Endpoint
	candIPs := map[string]bool{}
	for ap, c := range cands {
		candIPs[ap.Addr().String()] = true
		switch c.rank() {
		case 2:
			ready = append(ready, Endpoint{Addr: ap})
		case 1:
			fallback = append(fallback, Endpoint{Addr: ap, Terminating: true})
		default:
			r, detail := ExcludedNotReady, "not ready"
			if c.terminating && !c.serving {
				r, detail = ExcludedNotServing, "terminating, and no longer serving"
			}
			drop(ap.Addr().String(), ap.Port(), r, detail)
		}
	}
	out := ready
	if len(out) == 0 {
		out = fallback
	} else {
		for _, e := range fallback {
			drop(e.Addr.Addr().String(), e.Addr.Port(), ExcludedTerminating, "terminating; still serving, but used only while no endpoint is ready")
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Compare(out[j].Addr) < 0 })
	sel.endpoints = out
	if len(out) == 0 {
		sel.reason = "no ready endpoints"
		if len(cands) == 0 {
			sel.reason = "no endpoints"
		}
	}
	// An address that a slice without the port also lists is not left out
	// for that when another slice gives it the port.
	kept := dropped[:0]
	for _, d := range dropped {
		if d.Reason != ExcludedNoPort || !candIPs[d.Address] {
			kept = append(kept, d)
		}
	}
	sel.excluded = sortExcluded(kept)
	return sel
}

// endpointCheck is the verdict on one endpoint's address: the address,
// or why it is left out (reason), with the problem to report when the
// cluster should hear of it.
type endpointCheck struct {
	ip netip.Addr
	// addr is the address as an exclusion names it, when it is one:
	// normalized when it parses, as the slice has it when it does not.
	addr    string
	reason  Exclusion
	detail  string
	problem Problem
}

// checkEndpoint checks the address of endpoint i of es, a slice of the
// family v6 says. Like kube-proxy, only the first address counts: the
// others are the same endpoint by definition. Ports and DNS names both
// go by it, so that an address refused as a DNAT target is never named
// either.
func checkEndpoint(cfg ClusterConfig, env *buildEnv, es *discoveryv1.EndpointSlice, i int, v6 bool) endpointCheck {
	raw := es.Endpoints[i].Addresses[0]
	ip, err := netip.ParseAddr(raw)
	if err != nil {
		return endpointCheck{addr: raw, reason: ExcludedInvalid, detail: "not an IP address",
			problem: problemf(ReasonInvalidEndpoint, "EndpointSlice %s: endpoints[%d] address %q is not an IP address: dropped", es.Name, i, raw)}
	}
	ip = ip.Unmap()
	c := endpointCheck{ip: ip}
	switch {
	case ip.Is6() != v6:
		c.reason, c.detail = ExcludedWrongFamily, fmt.Sprintf("an address of the other family in an %s EndpointSlice", es.AddressType)
	case ip.Zone() != "":
		c.reason, c.detail = ExcludedInvalid, "an address with an IPv6 zone"
		c.problem = problemf(ReasonInvalidEndpoint, "EndpointSlice %s: endpoint %s has an IPv6 zone: dropped", es.Name, ip)
	default:
		if r, detail := env.checkTarget(cfg, ip); r != "" {
			c.reason, c.detail = r, detail
			c.problem = targetProblem("EndpointSlice "+es.Name+": endpoint", ip, cfg, r, detail)
		}
	}
	if c.reason != "" {
		// Only then: a usable endpoint's text would be an allocation
		// per endpoint per build, for nothing.
		c.addr = ip.String()
	}
	return c
}

// filtered is a selection of a port whose traffic policy leaves every
// endpoint out: the usable ones become exclusions too.
func filtered(sel selection) []ExcludedEndpoint {
	out := slices.Clone(sel.excluded)
	for _, e := range sel.endpoints {
		out = append(out, ExcludedEndpoint{Address: e.Addr.Addr().String(), Port: e.Addr.Port(), Reason: ExcludedFiltered,
			Detail: "internalTrafficPolicy is Local: only node-local endpoints are used, and this host is no node"})
	}
	return sortExcluded(out)
}

// sortExcluded orders exclusions by address (unparsable ones last, by
// text), then port, and keeps the first of each address and port: the
// same endpoint in two slices is one endpoint.
func sortExcluded(in []ExcludedEndpoint) []ExcludedEndpoint {
	if len(in) == 0 {
		return nil
	}
	slices.SortStableFunc(in, func(a, b ExcludedEndpoint) int {
		ia, ea := netip.ParseAddr(a.Address)
		ib, eb := netip.ParseAddr(b.Address)
		switch {
		case ea == nil && eb == nil:
			if c := ia.Compare(ib); c != 0 {
				return c
			}
		case ea == nil:
			return -1
		case eb == nil:
			return 1
		default:
			if c := strings.Compare(a.Address, b.Address); c != 0 {
				return c
			}
		}
		// Then the detail, so that which of two slices naming the same
		// endpoint comes first does not matter.
		return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Detail, b.Detail))
	})
	return slices.CompactFunc(in, func(a, b ExcludedEndpoint) bool { return a.Address == b.Address && a.Port == b.Port })
}

// normalized is an address as netip prints it, or as given when it does
// not parse.
func normalized(addr string) string {
	if ip, err := netip.ParseAddr(addr); err == nil {
		return ip.Unmap().String()
	}
	return addr
}

// slicePort finds the target port a slice gives the named service port; when
// there is none it says why instead.
func slicePort(es *discoveryv1.EndpointSlice, name string, proto Protocol) (uint16, string) {
	for _, p := range es.Ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		pp := TCP
		if p.Protocol != nil {
			pp = Protocol(*p.Protocol)
		}
		if pn != name || pp != proto || p.Port == nil {
			continue
		}
		if *p.Port < 1 || *p.Port > 65535 {
			return 0, fmt.Sprintf("EndpointSlice %s gives port %s the number %d, out of range", es.Name, portName(name, proto), *p.Port)
		}
		return uint16(*p.Port), ""
	}
	return 0, fmt.Sprintf("EndpointSlice %s has no port %s", es.Name, portName(name, proto))
}

// portName names a service port in messages: "http"/TCP, or unnamed/UDP.
func portName(name string, proto Protocol) string {
	if name == "" {
		return "unnamed/" + string(proto)
	}
	return fmt.Sprintf("%q/%s", name, proto)
}

func inAny(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
