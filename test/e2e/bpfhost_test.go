//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"slices"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/test/lab"
)

// A mode that pins its objects on the bpffs and attaches programs to a
// cgroup (ebpf mode, by its declared privileges) runs in a lab whose
// host namespace has a bpffs of its own (lab.BPFHost), and its daemons
// attach to a throw-away cgroup that holds this test process and so every
// process it starts (lab.EnterCgroup): the lab's clients dial from this
// process's threads, and `ip netns exec` children inherit its cgroup. Its
// hooks translate only the sockets of the daemon's own network namespace,
// the lab's host, so the pods' servers (threads of this process too, in
// their own namespaces) and everything else are untouched. The machine's
// own cgroup root and /sys/fs/bpf are never used, and TestMain checks at
// the end that they are as they were.
var (
	// bpfHost is the lab.BPFHost of every lab of the suite; nil for
	// modes that need none.
	bpfHost *lab.BPFHost
	// testCgroup is the throw-away cgroup, and the ebpf_cgroup of every
	// daemon config (withHostKeys); "" without bpfHost.
	testCgroup string
)

// needsBPFHost says whether mode m writes the bpffs, as its unit
// privileges declare.
func needsBPFHost(m string) bool {
	pm := proxy.Lookup(config.Mode(m))
	return pm != nil && slices.Contains(pm.Privileges.ReadWritePaths, config.DefaultBPFFS)
}

// labOptions is opts with what every lab of the suite needs.
func labOptions(opts lab.Options) lab.Options {
	opts.BPF = bpfHost
	return opts
}

// setUpBPFHost makes the throw-away cgroup, moves this process into it
// and returns what undoes that, and what checks that the machine's own
// cgroup root and /sys/fs/bpf did not change meanwhile.
func setUpBPFHost() (done func() error, err error) {
	cg, err := lab.EnterCgroup("e2e", os.Stdout)
	if err != nil {
		return nil, err
	}
	bpfHost, testCgroup = cg.BPFHost(), cg.Path
	fmt.Printf("e2e: mode %s: the hooks attach to %s, which holds this process; every lab host has a bpffs of its own\n", mode, cg.Path)
	return cg.Close, nil
}
