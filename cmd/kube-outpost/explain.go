package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

const explainUsage = `Usage: kube-outpost explain CLUSTER/NAMESPACE/NAME | CLUSTER-IP:PORT[/PROTOCOL] [--socket PATH] [--output text|json]

Shows what a connection to a service's ClusterIP meets on this host: the
rules or virtual server, each endpoint with its share, why endpoints were
left out, and every difference between what kube-outpost wants and what the
kernel holds. Without a protocol, every protocol of CLUSTER-IP:PORT.`

// explainCommand prints the running daemon's explanation of one service or
// ClusterIP:port. Exit codes: 0 explained, 1 daemon not running, nothing to
// explain or failing, 2 usage.
func explainCommand(args []string, stdout, stderr io.Writer) int {
	fs, socket, output := socketFlags("explain", explainUsage, stderr)
	pos, code := parseInterleaved(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "explain: want one service or ClusterIP:port, got %d arguments\n%s\n", len(pos), explainUsage)
		return 2
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "explain: --output %q: want text or json\n", *output)
		return 2
	}
	q, err := model.ParseQuery(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "explain: %v\n", err)
		return 2
	}
	// An explanation reads iptables-save, which takes a while with tens of
	// thousands of rules.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := status.Explain(ctx, *socket, q)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *output == "json" {
		err = status.WriteJSON(stdout, ex)
	} else {
		err = status.WriteExplanation(stdout, ex)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
