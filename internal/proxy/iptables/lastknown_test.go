package iptables

import (
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
)

// TestLastKnownClusterProgrammed: after a reboot the kernel holds nothing,
// and a cluster that has not synced but serves its last known state has its
// ports programmed like a synced one's; when it syncs, the live state's
// partial sync removes what the kept one had and the live one lacks.
func TestLastKnownClusterProgrammed(t *testing.T) {
	f := NewFake() // a rebooted host: no rule of ours
	st := testState()
	beta := modeltest.ClusterOf(st, "beta")
	beta.Synced, beta.LastKnown = false, time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	p := newProxier(f, false, testMark)
	mustSync(t, p, st, false)
	runFlows(t, f, []flowCase{
		{"kept state's service", tcp("10.97.0.10", 443), shares(true, "10.1.0.1:6443", "10.1.0.2:6443")},
		{"synced cluster's service", tcp("10.96.0.10", 80), shares(true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080")},
	})
	checkSameAsFull(t, f, st, false, testMark)

	// The live state: api is gone, api2 is new.
	st = modeltest.CloneState(st)
	beta = modeltest.ClusterOf(st, "beta")
	beta.Synced, beta.LastKnown = true, time.Time{}
	beta.Ports = map[model.PortKey]*model.ServicePort{}
	api2 := svc("beta", "default", "api2", "", model.TCP, "10.97.0.11", 80, "10.1.0.3:80")
	beta.Ports[api2.Key] = api2
	mustSync(t, p, st, false)
	runFlows(t, f, []flowCase{
		{"service the live state lacks", tcp("10.97.0.10", 443), untouched},
		{"service of the live state", tcp("10.97.0.11", 80), shares(true, "10.1.0.3:80")},
	})
	checkSameAsFull(t, f, st, false, testMark)
}
