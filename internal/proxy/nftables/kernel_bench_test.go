//go:build kernel

// Benchmarks against the real kernel, the same for every mode
// (internal/proxy/kernelbench). They program nftables in the network
// namespace they run in, so `make bench` runs them inside a throw-away one:
//
//	ip netns add b && ip netns exec b go test -tags kernel -run '^$' -bench Kernel ./internal/proxy/nftables/
package nftables

import (
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/kernelbench"
)

func kernelBackend(b *testing.B) proxy.Backend {
	nft, err := knftables.New(familyOf(false).nft, TableName)
	if err != nil {
		b.Skip(err)
	}
	return New(Options{NFT: nft, Rules: &NetlinkWriter{}, MasqueradeMark: testMark})
}

// BenchmarkKernelFullSync: the first sync of 10,000 services x 10
// endpoints (kube-proxy's nftables mode: 12.9 s), and the memory it needs.
func BenchmarkKernelFullSync(b *testing.B) { kernelbench.FullSync(b, kernelBackend) }

// BenchmarkKernelRestart: a restarted daemon's first sync, over the rules
// the last one left.
func BenchmarkKernelRestart(b *testing.B) { kernelbench.Restart(b, kernelBackend) }

// BenchmarkKernelOneChange: one service's endpoints change among 10,000.
func BenchmarkKernelOneChange(b *testing.B) { kernelbench.OneChange(b, kernelBackend) }

// BenchmarkKernelAddService: one service appears among 10,000.
func BenchmarkKernelAddService(b *testing.B) { kernelbench.AddService(b, kernelBackend) }

// BenchmarkKernelFirstPacket: connect time to a ClusterIP with 10 and with
// 10,000 services programmed.
func BenchmarkKernelFirstPacket(b *testing.B) { kernelbench.FirstPacket(b, kernelBackend) }
