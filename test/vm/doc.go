// Package vm installs and runs the kube-outpost packages in a real Debian
// bookworm with systemd, booted under QEMU software emulation (TCG; nested KVM
// hangs on the lab machines), and checks the .rpm on the host. The tests are
// behind the build tag "vm":
//
//   - TestGuestNetwork: the guest reaches the lab's pods and apiserver, and a
//     kube-outpost built from this tree, run by hand, serves a ClusterIP.
//   - TestDebInVM: the .deb installs offline; the unit starts (Type=notify),
//     reloads, restarts. A power cycle follows, for guarantees 2 and 6 of
//     issue 13. Before it the guest has the host make a Service "boot"
//     answered by web-1, and switches to the legacy iptables backend; while the
//     guest is off, the host moves "boot" to web-2, makes "boot-new" and
//     stops the apiserver. The enabled unit comes up by itself at boot, with
//     no /run/xtables.lock before its prepare made one, writes with the
//     legacy backend, and serves the last known state: "boot" answered by
//     web-1, `kube-outpost status` STALE, kube_outpost_cluster_stale_state
//     at 1. The guest has the apiserver started: both changes are followed
//     (the time is logged). Then `flock /run/xtables.lock sleep 10`: the
//     rules keep serving, "boot" stays on web-2 while a change made during
//     the hold moves it back to web-1 once the lock is free (the sync
//     errors counted and the delay are logged). Back on the nf_tables
//     backend, an upgrade to a newer .deb (`make package
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
//   - TestCoexistence: kube-outpost beside Docker and ufw, then Docker and
//     firewalld with its nftables backend (ipvs.sh, part_coexist; issue 13,
//     guarantee 9; the image has the three installed, none started at
//     boot). Their rules (iptables-nft-save, ip6tables-nft-save and `nft -s
//     list ruleset`, without ours and without counters) stay byte-identical
//     through our churn (a service made, moved, deleted by the host),
//     `systemctl reload`, a switch to ipvs mode, `kube-outpost cleanup` in
//     either mode and a start in iptables mode; through each of their
//     reloads (`ufw reload`, `firewall-cmd --reload`, `systemctl restart
//     docker`) in both modes, and `nft flush ruleset`, the ClusterIP answers
//     again within 5 s; the outage and the repairs counted are logged. In
//     each mode the jump into our nat rules is deleted alone, as a flush
//     between a repair's listing and its restore leaves it: the probe must
//     find it, and the ClusterIP answer again within 30 s.
//
// The four IPVS tests share one boot (the parts "mode", "kernel", "e2e",
// then "coexist", each in a process of its own); the first of them to run
// boots it.
//
// The guest asks the test for what only the host can do (change the lab's
// objects, stop or start its apiserver) with `host_step NAME` in run.sh, a
// request to a server of the test at 10.0.2.2 (steps_test.go); what the
// host does while the guest is off between two boots is runGuest's
// between.
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
// go test -tags vm -count=1 -timeout 40m -v ./test/vm/
//
// Environment: KO_VM_IMAGE (an image directory; default: what
// build-image.sh prints), KO_VM_DIST (a directory with the .deb and .rpm;
// default: dist/ after `make package`), KO_VM_UPGRADE_DEB (the .deb to
// upgrade to, of a higher version; default: built as above),
// KO_VM_ARTIFACTS (a directory to keep the guests' logs in).
package vm
