//go:build e2e

package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// testClusterIPOutsideServiceCIDRs: a cluster gains a service range this
// host was not told about; its ClusterIPs are refused with a warning and
// never programmed, while the configured range keeps working. The range
// stays in alpha, so this runs in TestAfterAll, after every other test.
func testClusterIPOutsideServiceCIDRs(t *testing.T) {
	alpha := theLab.Cluster("alpha").Admin
	d := startDaemon(t, writeConfig(t))
	ns := namespace(t, alpha, "outside")
	serviceCIDR(t, alpha, "extra", extraRange)
	inside := service(t, alpha, ns, "inside", web, func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.250.10" })
	slice(t, alpha, ns, "inside", "1", web, []ep{readyEP(ip("a1"))})
	outside := service(t, alpha, ns, "outside", web, func(s *corev1.Service) { s.Spec.ClusterIP = "10.98.0.10" })
	slice(t, alpha, ns, "outside", "1", web, []ep{readyEP(ip("a1"))})
	answeredBy(t, url(inside, 80), 3, "a1")
	eventually(t, 10*time.Second, "warning logged", func() error {
		if d.count(`outside/outside.*10\.98\.0\.10 is outside the cluster's service_cidrs`) == 0 {
			return errors.New("no warning for the ClusterIP outside service_cidrs")
		}
		return nil
	})
	if rules := kernelState(t); mentions(rules, outside) || strings.Contains(rules, "outside/outside") {
		t.Fatalf("a ClusterIP outside service_cidrs was programmed:\n%s", rules)
	}
}
