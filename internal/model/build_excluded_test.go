package model

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// fmtExcluded prints exclusions as "addr reason", one per element.
func fmtExcluded(ex []ExcludedEndpoint) []string {
	var out []string
	for _, e := range ex {
		out = append(out, fmt.Sprintf("%s %s", e, e.Reason))
	}
	return out
}

// TestExcluded checks, per decision selectEndpoints makes, that the
// endpoints it leaves out are recorded with the right reason, and that the
// used ones never are.
func TestExcluded(t *testing.T) {
	const vip, vip6 = "10.96.0.10", "fd00:96::10"
	unnamed := []discoveryv1.EndpointPort{slicePortOf("", tcp, 8080)}
	web := []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)}
	local := corev1.ServiceInternalTrafficPolicyLocal

	tests := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		// want is per port, in key order: "addr reason" lines.
		want [][]string
		// detail, when set, must appear in the Detail of the first
		// exclusion of the first port.
		detail string
	}{
		{
			name: "all ready: nothing left out",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("10.0.0.1"), readyEP("10.0.0.2"))},
			want: [][]string{nil},
		},
		{
			name: "not ready, not serving, and terminating while ready ones exist",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("10.0.0.1"), terminatingEP("10.0.0.2", true), notReadyEP("10.0.0.10"), terminatingEP("10.0.0.3", false))},
			want: [][]string{{"10.0.0.2:8080 terminating", "10.0.0.3:8080 terminating-not-serving", "10.0.0.10:8080 not-ready"}},
		},
		{
			name: "terminating fallback in use: only the not-serving one is left out",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				terminatingEP("10.0.0.2", true), terminatingEP("10.0.0.3", false))},
			want: [][]string{{"10.0.0.3:8080 terminating-not-serving"}},
		},
		{
			name: "unsafe and invalid addresses",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("169.254.169.254"), readyEP("not-an-ip"), readyEP("::ffff:127.0.0.2"), readyEP("10.0.0.1"))},
			want:   [][]string{{"127.0.0.2:8080 unsafe-address", "169.254.169.254:8080 unsafe-address", "not-an-ip:8080 invalid-address"}},
			detail: "a loopback address",
		},
		{
			name: "IPv6 zone and an IPv4 address in an IPv6 slice",
			svc:  newSvc("web", []string{vip6}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv6, unnamed,
				readyEP("fe80::1%eth0"), readyEP("10.0.0.1"), readyEP("2001:db8::1"))},
			want:   [][]string{{"10.0.0.1:8080 wrong-family", "[fe80::1%eth0]:8080 invalid-address"}},
			detail: "other family in an IPv6 EndpointSlice",
		},
		{
			name: "a slice without the port: its endpoints, without a port",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("http", corev1.ProtocolTCP, 80)}),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("http", tcp, 8080)}, readyEP("10.0.0.1")),
				newSlice("web", "web-2", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("metrics", tcp, 9090)}, readyEP("10.0.0.2")),
			},
			want:   [][]string{{"10.0.0.2 no-port"}},
			detail: `EndpointSlice web-2 has no port "http"/TCP`,
		},
		{
			name: "an address another slice gives the port is not left out for the one without",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("http", corev1.ProtocolTCP, 80)}),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("http", tcp, 8080)}, readyEP("10.0.0.1")),
				newSlice("web", "web-2", discoveryv1.AddressTypeIPv4, nil, readyEP("10.0.0.1")),
			},
			want: [][]string{nil},
		},
		{
			name: "slice port out of range",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("", tcp, 0)}, readyEP("10.0.0.1"))},
			want:   [][]string{{"10.0.0.1 no-port"}},
			detail: "the number 0, out of range",
		},
		{
			name: "the same not-ready endpoint in two slices is one exclusion",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, notReadyEP("10.0.0.1")),
				newSlice("web", "web-2", discoveryv1.AddressTypeIPv4, unnamed, notReadyEP("10.0.0.1"), readyEP("10.0.0.2")),
			},
			want: [][]string{{"10.0.0.1:8080 not-ready"}},
		},
		{
			name: "not ready in one slice, ready in another: used, not left out",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, notReadyEP("10.0.0.1")),
				newSlice("web", "web-2", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1")),
			},
			want: [][]string{nil},
		},
		{
			name: "dual-stack: the other family's slice is the other port's, not an exclusion",
			svc:  newSvc("web", []string{vip, vip6}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-v4", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1")),
				newSlice("web", "web-v6", discoveryv1.AddressTypeIPv6, unnamed, readyEP("2001:db8::1"), notReadyEP("2001:db8::2")),
			},
			want: [][]string{nil, {"[2001:db8::2]:8080 not-ready"}},
		},
		{
			name: "internalTrafficPolicy Local: usable endpoints are filtered, the others keep their reason",
			svc: newSvc("web", []string{vip}, web, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = &local
			}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("10.0.0.1"), notReadyEP("10.0.0.2"), readyEP("127.0.0.1"))},
			want:   [][]string{{"10.0.0.1:8080 filtered", "10.0.0.2:8080 not-ready", "127.0.0.1:8080 unsafe-address"}},
			detail: "internalTrafficPolicy is Local",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := buildService(testCfg, nil, tt.svc, tt.slices)
			sortPorts(res.ports)
			if len(res.ports) != len(tt.want) {
				t.Fatalf("%d ports, want %d: %s", len(res.ports), len(tt.want), fmtPorts(res.ports))
			}
			for i, p := range res.ports {
				got := fmtExcluded(p.Excluded)
				if strings.Join(got, "\n") != strings.Join(tt.want[i], "\n") {
					t.Errorf("%s excluded:\n got %q\nwant %q", p.Key, got, tt.want[i])
				}
				used := map[string]bool{}
				for _, e := range p.Endpoints {
					used[e.Addr.String()] = true
				}
				for _, e := range p.Excluded {
					if used[e.String()] {
						t.Errorf("%s: %s is both used and left out", p.Key, e)
					}
					if e.Detail == "" {
						t.Errorf("%s: %s left out without a detail", p.Key, e)
					}
				}
			}
			if tt.detail != "" && (len(res.ports) == 0 || len(res.ports[0].Excluded) == 0 ||
				!strings.Contains(res.ports[0].Excluded[0].Detail, tt.detail)) {
				t.Errorf("first exclusion's detail does not mention %q: %+v", tt.detail, res.ports[0].Excluded)
			}
		})
	}
}

func sortPorts(ps []*ServicePort) {
	slices.SortFunc(ps, func(a, b *ServicePort) int { return a.Key.Compare(b.Key) })
}

// A change only to left-out endpoints reaches the published ServicePort:
// the store keeps the old value of an Equal port, so if exclusions were not
// part of Equal, explain would show stale reasons.
func TestStoreExclusionsFollowChanges(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertService("c1", webSvc())
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), notReadyEP("10.0.0.2")))
	ts.changes = 0
	if got := fmtExcluded(ts.port(t, webKey).Excluded); strings.Join(got, ",") != "10.0.0.2:8080 not-ready" {
		t.Fatalf("excluded = %q", got)
	}

	// 10.0.0.2 turns terminating-not-serving: the same endpoints are used.
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), terminatingEP("10.0.0.2", false)))
	ts.expectChanges(t, 1, "only an excluded endpoint changed")
	p := ts.port(t, webKey)
	checkEndpoints(t, p, "10.0.0.1:8080")
	if got := fmtExcluded(p.Excluded); strings.Join(got, ",") != "10.0.0.2:8080 terminating-not-serving" {
		t.Errorf("excluded after the change = %q", got)
	}

	// A resync of the same objects is still no change.
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), terminatingEP("10.0.0.2", false)))
	ts.expectChanges(t, 0, "resync")
	if ts.port(t, webKey) != p {
		t.Error("a no-op update replaced the ServicePort")
	}
}
