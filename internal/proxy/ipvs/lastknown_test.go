package ipvs

import (
	"testing"
	"time"
)

// TestLastKnownClusterProgrammed: after a reboot the kernel holds nothing,
// and a cluster that has not synced but serves its last known state gets
// its VIPs and virtual servers like a synced one.
func TestLastKnownClusterProgrammed(t *testing.T) {
	e := newEnv(t) // a rebooted host: no virtual server of ours
	beta := cluster("beta", false, betaCIDRs, betaAPI)
	beta.LastKnown = time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	e.sync(state(cluster("alpha", true, alphaCIDRs, webHTTP), beta), false)
	e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10", "10.97.0.10")
	e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80", "10.97.0.10,tcp:443")

	// Synced, without the service: it goes.
	e.sync(state(cluster("alpha", true, alphaCIDRs, webHTTP), cluster("beta", true, betaCIDRs)), false)
	e.wantSet("OUTPOST-IPVS-VIPS", "10.96.0.10")
	e.wantSet("OUTPOST-IPVS-PORTS", "10.96.0.10,tcp:80")
}
