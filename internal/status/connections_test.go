package status

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

func TestAddConnections(t *testing.T) {
	r := exampleReport(t)
	port := func(cluster, ns, name, p string, proto model.Protocol) model.PortKey {
		return model.PortKey{Cluster: cluster, Namespace: ns, Name: name, Port: p, Protocol: proto}
	}
	counts := map[model.PortKey]uint64{
		port("prod", "default", "web", "http", model.TCP):    40,
		port("prod", "default", "dns", "dns", model.UDP):     7,
		port("prod", "default", "dns", "dns-tcp", model.TCP): 7,
		port("prod", "default", "idle", "http", model.TCP):   0,
		port("staging", "default", "web", "http", model.TCP): 3,
	}
	for i := range 6 {
		counts[port("prod", "batch", "job", string(rune('a'+i)), model.TCP)] = 1
	}
	r.AddConnections(counts)
	prod, staging := r.Clusters[0], r.Clusters[1]
	if prod.Connections == nil || *prod.Connections != 60 {
		t.Fatalf("prod's connections: %v, want 60", prod.Connections)
	}
	var got []string
	for _, p := range prod.Busiest {
		got = append(got, p.Port)
	}
	// Most first, ties by name, five at most; a port without any is not
	// named, whatever room is left.
	want := []string{"default/web:http", "default/dns:dns-tcp", "default/dns:dns/UDP", "batch/job:a", "batch/job:b"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("prod's busiest ports %v, want %v", got, want)
	}
	if staging.Connections == nil || *staging.Connections != 3 || len(staging.Busiest) != 1 {
		t.Errorf("staging: %v %+v", staging.Connections, staging.Busiest)
	}

	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	line := "new connections since the rules were written: 60 (busiest: default/web:http 40, default/dns:dns-tcp 7, default/dns:dns/UDP 7, batch/job:a 1, batch/job:b 1)"
	if !strings.Contains(b.String(), line) {
		t.Errorf("report lacks %q:\n%s", line, b.String())
	}
}

// A mode that counts nothing says nothing about connections.
func TestNoConnectionsWithoutCounts(t *testing.T) {
	r := exampleReport(t)
	var b bytes.Buffer
	if err := testRenderer.report(&b, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "new connections") {
		t.Errorf("a report without counts mentions connections:\n%s", b.String())
	}
}
