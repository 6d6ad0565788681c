package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/status"
)

const statusUsage = `Usage: kube-outpost status [--socket PATH] [--output text|json]

Asks the running daemon, over its root-only socket, how each cluster is
doing: apiserver reachable or its last error, informers synced, what is
programmed and what is refused, and the last sync.`

// statusCommand prints the running daemon's status. Exit codes: 0 answered,
// 1 daemon not running or failing, 2 usage.
func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs, socket, output := socketFlags("status", statusUsage, stderr)
	pos, code := parseInterleaved(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "status: unexpected argument %q\n%s\n", pos[0], statusUsage)
		return 2
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "status: --output %q: want text or json\n", *output)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := status.Get(ctx, *socket)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *output == "json" {
		err = status.WriteJSON(stdout, r)
	} else {
		err = status.WriteReport(stdout, r)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// socketFlags are the flags status and explain share.
func socketFlags(name, usage string, stderr io.Writer) (fs *flag.FlagSet, socket, output *string) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	socket = fs.String("socket", status.DefaultSocket, "the daemon's status socket (status_socket in its config)")
	output = fs.String("output", "text", "text, or json for scripts")
	fs.StringVar(output, "o", "text", "short for --output")
	return fs, socket, output
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments (kube-outpost explain prod/default/web -o json), which flag
// alone stops at. code is -1 to go on, else the exit code.
func parseInterleaved(fs *flag.FlagSet, args []string) (pos []string, code int) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if fs.NArg() == 0 {
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
