//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Node ports given explicitly: one held by a local listener of the host,
// one claimed by a service in each cluster.
const (
	npHeld = 30111
	npDup  = 30222
)

var npPorts = []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080}}

// nodePortConfig is writeConfig with serve_node_ports = true in every
// cluster.
func nodePortConfig(t *testing.T, clusters ...string) string {
	t.Helper()
	path := writeConfig(t, clusters...)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range strings.SplitAfter(string(data), "\n") {
		b.WriteString(l)
		if strings.HasPrefix(l, "service_cidrs = ") {
			b.WriteString("serve_node_ports = true\n")
		}
	}
	out := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(out, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// nodePortService creates a NodePort service and returns the node port the
// apiserver gave it (np when not 0).
func nodePortService(t *testing.T, c kubernetes.Interface, ns, name string, np int32) uint16 {
	t.Helper()
	service(t, c, ns, name, npPorts, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = np
	})
	got, err := c.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := got.Spec.Ports[0].NodePort; n == 0 || (np != 0 && n != np) {
		t.Fatalf("service %s/%s has node port %d, want %d", ns, name, n, np)
	}
	return uint16(got.Spec.Ports[0].NodePort)
}

// TestNodePorts: with serve_node_ports, the host answers at its own
// non-loopback addresses on every service's node port, as a node would:
// a legacy machine that routes through it dials the host's address at the
// node port and reaches the pods, masqueraded; a node port without
// endpoints is refused; 127.0.0.1 at a node port is not served; a node
// port that a local process listens on, or that another cluster's older
// service has, is refused and says so in status. Checked by packets, so
// that it holds in ipvs mode as in iptables mode. The legacy machine is
// not in routed_clients (none is): node ports answer everyone.
func TestNodePorts(t *testing.T) {
	needs(t, config.CanNodePorts)
	alpha, beta := theLab.Cluster("alpha").Admin, theLab.Cluster("beta").Admin
	ctx := context.Background()

	// A local process holds npHeld before the daemon starts; it answers
	// HTTP with "local".
	held, err := theLab.ListenHost(fmt.Sprintf("0.0.0.0:%d", npHeld))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	go serveBody(held, "local")

	ns := namespace(t, alpha, "nodeports")
	webNP := nodePortService(t, alpha, ns, "web", 0)
	slice(t, alpha, ns, "web", "1", npPorts, []ep{readyEP(ip("a1")), readyEP(ip("a2"))})
	emptyNP := nodePortService(t, alpha, ns, "empty", 0)
	nodePortService(t, alpha, ns, "held", npHeld)
	slice(t, alpha, ns, "held", "1", npPorts, []ep{readyEP(ip("a3"))})
	nodePortService(t, alpha, ns, "dup", npDup)
	slice(t, alpha, ns, "dup", "1", npPorts, []ep{readyEP(ip("a1"))})
	// Created later, in the other cluster.
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has seconds
	nsb := namespace(t, beta, "nodeports")
	nodePortService(t, beta, nsb, "dup", npDup)
	slice(t, beta, nsb, "dup", "1", npPorts, []ep{readyEP(ip("b1"))})

	cfg := nodePortConfig(t)
	sock := configValue(t, cfg, "status_socket")
	d := startDaemon(t, cfg)
	client, err := theLab.AddRoutedClient(ctx, "nodeports")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := client.Close(); err != nil {
			t.Errorf("removing the routed client: %v", err)
		}
		if t.Failed() {
			t.Logf("kernel state:\n%s", kernelState(t))
		}
	})
	at := func(np uint16) string { return url(client.Gateway, int(np)) }

	t.Run("a legacy machine reaches the pods at the host's address and node port, masqueraded", func(t *testing.T) {
		wantSrc := theLab.HostIP.String()
		eventually(t, 30*time.Second, "answers from a1 and a2 at "+at(webNP), func() error {
			return masqueradedBy(client, at(webNP), 30, wantSrc, "a1", "a2")
		})
	})

	t.Run("a local process reaches them at the host's own address too", func(t *testing.T) {
		eventually(t, 20*time.Second, "answer from the host itself", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			body, err := theLab.HTTPGet(ctx, at(webNP))
			if err != nil {
				return err
			}
			if body != "a1" && body != "a2" {
				return fmt.Errorf("answered by %q", body)
			}
			return nil
		})
	})

	t.Run("a node port without endpoints is refused", func(t *testing.T) {
		eventually(t, 20*time.Second, "connection refused at "+at(emptyNP), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return routedRefused(client.HTTPGet(ctx, at(emptyNP)))
		})
	})

	t.Run("no node port at 127.0.0.1", func(t *testing.T) {
		// The node port works by now (the first subtest); loopback must
		// still be refused by the kernel: nothing listens there.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := theLab.DialHost(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", webNP))
		if err == nil {
			c.Close()
			t.Fatalf("127.0.0.1:%d accepted a connection: node ports must never be served on loopback", webNP)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("127.0.0.1:%d: %v, want connection refused", webNP, err)
		}
	})

	t.Run("a node port a local process listens on is refused, and the process keeps its traffic", func(t *testing.T) {
		eventually(t, 30*time.Second, "the refusal in status", func() error {
			return refusalIn(statusJSON(t, sock), "alpha", ns, "held",
				fmt.Sprintf("node port in use: node port %d/TCP", npHeld))
		})
		text, err := theLab.HostRun(ctx, binary, "status", "--socket", sock)
		if err != nil || !strings.Contains(text, fmt.Sprintf("%d/TCP", npHeld)) || !strings.Contains(text, "local process") {
			t.Errorf("kube-outpost status does not show the refused node port: %v\n%s", err, text)
		}
		if d.count(fmt.Sprintf(`service not fully programmed.*cluster=alpha.*node port %d/TCP.*local process`, npHeld)) == 0 {
			t.Errorf("no warning logged for the held node port")
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if body, err := client.HTTPGet(cctx, at(npHeld)); err != nil || body != "local" {
			t.Errorf("%s answered %q, %v; want the local listener's \"local\"", at(npHeld), body, err)
		}
	})

	t.Run("the same node port in two clusters: the later service is refused", func(t *testing.T) {
		eventually(t, 30*time.Second, "beta's claim refused in status", func() error {
			return refusalIn(statusJSON(t, sock), "beta", nsb, "dup",
				fmt.Sprintf(`node port conflict: node port %d/TCP of port "http"/TCP is already served on this host for cluster "alpha" service %s/dup`, npDup, ns))
		})
		if d.count(`service not fully programmed.*cluster=beta.*node port conflict`) == 0 {
			t.Errorf("no warning logged for the node port conflict")
		}
		eventually(t, 20*time.Second, "alpha's dup answers", func() error {
			for range 10 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				body, err := client.HTTPGet(ctx, at(npDup))
				cancel()
				if err != nil {
					return err
				}
				if body != "a1" {
					return fmt.Errorf("answered by %q, want alpha's a1", body)
				}
			}
			return nil
		})
	})
}
