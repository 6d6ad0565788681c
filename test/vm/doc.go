// Package vm installs and runs the kube-outpost packages in a real Debian
// bookworm with systemd, booted under QEMU software emulation (TCG; nested KVM
// hangs on the lab machines), and checks the .rpm on the host. The tests are
// behind the build tag "vm":
//
//   - TestGuestNetwork: the guest reaches the lab's pods and apiserver, and a
//     kube-outpost built from this tree, run by hand, serves a ClusterIP.
//   - TestDebInVM: the .deb installs offline; the unit starts (Type=notify),
//     reloads, restarts, works with the legacy iptables backend, comes up by
//     itself after a power cycle; an upgrade to a newer .deb (`make package
//     VERSION=<version>.upgrade1` in a copy of the tree) keeps the admin's
//     edited config without a prompt and restarts the daemon on the new
//     binary while the ClusterIP goes on answering; remove keeps config and
//     rules, purge removes both. Then, in the same boot, the tarball install:
//     the bare binary in /usr/local/bin, `kube-outpost service install`
//     (/etc/systemd/system/kube-outpost.service), start, status, stop,
//     uninstall, and `kube-outpost cleanup`.
//   - TestRPMOnHost: the .rpm's files and scriptlets, and an install into a
//     scratch root (Debian's rpm, --nodeps --noscripts).
//   - TestIPVSMode: the .deb with mode = "ipvs" (test/vm/ipvs.sh): the
//     unit's privileged ExecStartPre loads ip_vs and sets net.ipv4.vs.*,
//     start is Type=notify READY, the ClusterIP answers from both pods, the
//     virtual server and its real servers are in /proc/net/ip_vs and the
//     ClusterIP on outpost0, a service without endpoints is refused at once,
//     a restart keeps the virtual server, an open connection and a request
//     loop; `kube-outpost cleanup` and `apt-get purge` each remove the
//     virtual servers, outpost0, the OUTPOST-IPVS chains and ipsets.
//   - TestIPVSKernel: the real-kernel tests of internal/proxy/ipvs (`go test
//     -c -tags ipvskernel`), as root in the guest; every TestKernel test must
//     pass there, and a skip fails.
//   - TestIPVSE2E: the end-to-end suite of test/e2e (`go test -c -tags
//     e2e`) in ipvs mode in the guest: the daemon and the clients in a
//     namespace of the guest, the apiservers "alpha" and "beta" and the
//     pods of this lab reached through QEMU's user networking (a remote lab,
//     test/lab/remote.go, served by this process at 10.0.2.2). Every test
//     must pass, except those in e2eSkips, which must skip.
//     `-run TestIPVSE2E/<pattern>` passes <pattern> to the suite.
//
// The three IPVS tests share one boot (the parts "mode", "kernel", then
// "e2e", each in a process of its own); the first of them to run boots it.
//
// The guest image comes from test/vm/build-image.sh (cached); the packages
// from `make package` (run by the tests; skipped while there is no such
// target and dist/ is empty). QEMU runs inside the lab's host network
// namespace with user networking, so every connection the guest makes (to
// the lab's apiserver, to pod IPs) is made by the QEMU process from that
// namespace, which has no route off the machine. The guest's script is
// test/vm/run.sh; its output and the guest's console are in the test log.
//
// Run (as root): bash test/vm/deps.sh && bash test/vm/build-image.sh &&
// go test -tags vm -count=1 -timeout 20m -v ./test/vm/
//
// Environment: KO_VM_IMAGE (an image directory; default: what
// build-image.sh prints), KO_VM_DIST (a directory with the .deb and .rpm;
// default: dist/ after `make package`), KO_VM_UPGRADE_DEB (the .deb to
// upgrade to, of a higher version; default: built as above),
// KO_VM_ARTIFACTS (a directory to keep the guests' logs in).
package vm
