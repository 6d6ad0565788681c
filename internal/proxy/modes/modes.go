// Package modes links every datapath mode into the binary: each import
// registers its mode with internal/proxy. A new mode is one line here.
package modes

import (
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/ebpf"     // mode = "ebpf"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/iptables" // mode = "iptables"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"     // mode = "ipvs"
	_ "github.com/kube-outpost/kube-outpost/internal/proxy/nftables" // mode = "nftables"
)
