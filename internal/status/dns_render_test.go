package status

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestReportDNS(t *testing.T) {
	r := Report{Mode: "iptables", Version: "v1", StartedAt: now.Add(-time.Hour), Clusters: []ClusterStatus{
		{Name: "prod", Reachable: true, Synced: true, Refused: []Refusal{}},
	}, DNS: &DNS{
		Listen: []string{"127.0.0.153:53", "10.0.0.5:53"}, Names: 12,
		Zones: []DNSZones{
			{Cluster: "prod", Zones: []string{"prod.internal", "cluster.local"},
				Reverse: []string{"96.10.in-addr.arpa", "97.10.in-addr.arpa", "98.10.in-addr.arpa"}},
			{Cluster: "dev", Zones: []string{"dev.internal"}, Reverse: []string{"196.10.in-addr.arpa"}},
		},
		Queries: []RcodeCount{{"NOERROR", 40}, {"NXDOMAIN", 3}, {"REFUSED", 1}},
		Dropped: []DropCount{{"overflow", 5120}, {"malformed", 2}},
		Skipped: 7, SkippedFirst: []string{"dev/shop/Evil\x1b[2J:http", "dev/shop/x.y:http"},
	}}
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	want := `
DNS: answering on 127.0.0.153:53, 10.0.0.5:53, 12 service names
  prod: prod.internal, cluster.local; reverse 96.10.in-addr.arpa, 97.10.in-addr.arpa and 1 more
  dev: dev.internal; reverse 196.10.in-addr.arpa
  queries answered: NOERROR 40, NXDOMAIN 3, REFUSED 1
  queries dropped: overflow 5120, malformed 2
  left out, not valid DNS names: 7 service ports (dev/shop/Evil\x1b[2J:http, dev/shop/x.y:http, ...)
`
	if out := b.String(); !strings.HasSuffix(out, want) {
		t.Errorf("report does not end with\n%s\n%s", want, out)
	}

	r.DNS.Queries, r.DNS.Dropped, r.DNS.Skipped, r.DNS.SkippedFirst = nil, nil, 0, nil
	b.Reset()
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "  queries answered: none yet\n") || strings.Contains(out, "left out") || strings.Contains(out, "dropped") {
		t.Errorf("a server with no query and nothing skipped:\n%s", out)
	}
	for _, c := range []struct {
		res  *Resolved
		line string
	}{
		{&Resolved{Registered: true, Link: "outpost-dns", Servers: []string{"127.0.0.153:53"}, Domains: []string{"96.10.in-addr.arpa", "prod.internal"}},
			"  systemd-resolved: registered on link outpost-dns, server 127.0.0.153:53, routing domains ~96.10.in-addr.arpa ~prod.internal\n"},
		{&Resolved{Link: "outpost-dns", Problem: "systemd-resolved is not running"}, "  systemd-resolved: not registered: systemd-resolved is not running\n"},
	} {
		r.DNS.Resolved = c.res
		b.Reset()
		if err := testRenderer.report(&b, r); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(b.String(), c.line) {
			t.Errorf("report does not end with %q:\n%s", c.line, b.String())
		}
	}
	r.DNS = nil
	b.Reset()
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "DNS") {
		t.Errorf("DNS lines without [dns]:\n%s", b.String())
	}
}
