package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/names"
)

const dnsConfigUsage = `Usage: kube-outpost dns-config [--config FILE] [--resolver NAME]

Prints, from the config alone (no apiserver is asked), what to paste into
a resolver so that it forwards the clusters' zones, and the reverse zones
of their service ranges, to the daemon's DNS server ([dns]): for
systemd-resolved, dnsmasq, unbound, BIND, and the resolver of a host
routed through this one. --resolver prints one of them only.`

// dnsConfigCommand prints the resolvers' snippets. Exit codes: 0 printed,
// 1 the config is unusable or has no [dns], 2 usage.
func dnsConfigCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dns-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", dnsConfigUsage)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	only := fs.String("resolver", "", "only this one: "+strings.Join(resolverNames(), ", "))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dns-config: unexpected argument %q\n%s\n", fs.Arg(0), dnsConfigUsage)
		return 2
	}
	if *only != "" && !slices.Contains(resolverNames(), *only) {
		fmt.Fprintf(stderr, "dns-config: --resolver %q: want one of %s\n", *only, strings.Join(resolverNames(), ", "))
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !cfg.DNS.Enabled() {
		fmt.Fprintf(stderr, "%s: no [dns] table: the DNS server is off, so there is nothing to forward to; see docs/dns.md\n", *cfgPath)
		return 1
	}
	fmt.Fprint(stdout, dnsConfigText(targetsOf(cfg), *only))
	return 0
}

// targetsOf are cfg's listen addresses and zones, as the daemon answers
// them.
func targetsOf(cfg *config.Config) dnsTargets {
	t := dnsTargets{Listen: cfg.DNS.Listen, Routed: len(cfg.RoutedClients) > 0}
	zones := names.ZonesOf(cfg.Clusters)
	for _, c := range cfg.Clusters {
		t.Clusters = append(t.Clusters, dnsCluster{Name: c.Name, Zones: zones[c.Name], Reverse: names.ReverseZonesOf(c)})
	}
	return t
}
