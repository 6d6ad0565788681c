package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/rbaccheck"
)

// A blackholed apiserver must not hang check-config: each request gets
// requestTimeout, a whole cluster's check (about twenty small requests)
// clusterTimeout.
const (
	requestTimeout = 10 * time.Second
	clusterTimeout = 45 * time.Second
)

// checkOnline is `check-config --online`: it connects to every configured
// cluster with the kubeconfig the daemon would use, and prints one block per
// cluster saying whether the credentials authenticate, grant what the
// watcher needs (in all namespaces, or in each of the cluster's
// `namespaces`), and grant more. It returns the exit code: 1 when a cluster
// is unreachable, rejects the credentials or misses a permission; 0
// otherwise, excess permissions being warnings only.
func checkOnline(ctx context.Context, cfg *config.Config, stdout, stderr io.Writer) int {
	// In parallel, so that one unreachable cluster costs its timeout once,
	// not once per cluster after it; printed in config order.
	results := make([]*rbaccheck.Result, len(cfg.Clusters))
	var wg sync.WaitGroup
	for i, c := range cfg.Clusters {
		wg.Go(func() { results[i] = checkCluster(ctx, c) })
	}
	wg.Wait()

	var failed []string
	for i, c := range cfg.Clusters {
		fmt.Fprintf(stdout, "\ncluster %q: %s (context %q, kubeconfig %s)\n", c.Name, c.Server, c.ContextName, c.Kubeconfig)
		results[i].Write(stdout, "  ")
		if results[i].Failed() {
			failed = append(failed, fmt.Sprintf("%q (%s)", c.Name, c.Server))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(stderr, "check-config --online: kube-outpost cannot watch %d of %d clusters: %s\n",
			len(failed), len(cfg.Clusters), strings.Join(failed, ", "))
		return 1
	}
	return 0
}

// checkCluster builds the client exactly as the watcher does, so that what
// is checked is what the daemon will use.
func checkCluster(ctx context.Context, c config.Cluster) *rbaccheck.Result {
	rc, err := cluster.RESTConfig(c)
	if err == nil {
		rc.Timeout = requestTimeout
		var client kubernetes.Interface
		if client, err = kubernetes.NewForConfig(rc); err == nil {
			ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
			defer cancel()
			// A cluster with namespaces is watched in those only, by
			// informers a Role in each of them allows.
			return rbaccheck.Check(ctx, client, rbaccheck.Options{WatchNamespaces: c.Namespaces, Nodes: c.Reach.ThroughNodes()})
		}
	}
	return &rbaccheck.Result{Findings: []rbaccheck.Finding{{
		Severity: rbaccheck.Error, Kind: rbaccheck.KindCheckFailed, Text: err.Error(),
	}}}
}
