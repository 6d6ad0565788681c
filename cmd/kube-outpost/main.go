// Command kube-outpost is kube-proxy for machines outside the cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/kube-outpost/kube-outpost/internal/cluster"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/daemon"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/status"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultConfig = "/etc/kube-outpost/config.toml"

const usage = `kube-outpost: reach Kubernetes ClusterIPs from machines that are not nodes.

Usage:
  kube-outpost run          [--config FILE] [--log-level LEVEL] [--log-format text|json]
  kube-outpost check-config [--config FILE] [--online]
  kube-outpost prepare      [--config FILE]    (privileged: kernel modules and sysctls the mode needs)
  kube-outpost cleanup      [--log-level LEVEL]
  kube-outpost service      install|uninstall|start|stop|status|drop-in [--config FILE]
  kube-outpost status       [--socket PATH] [--output text|json]
  kube-outpost explain      CLUSTER/NAMESPACE/NAME | CLUSTER-IP:PORT[/PROTOCOL] [--socket PATH] [--output text|json]
  kube-outpost dns-config   [--config FILE] [--resolver NAME]   (forward zones for the host's resolver, from [dns])
  kube-outpost version

The config file defaults to ` + defaultConfig + `. status and explain ask the
running daemon on its status socket (status_socket), by default
` + status.DefaultSocket + `; they need root.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	var online *bool
	if cmd == "check-config" {
		online = fs.Bool("online", false, "also connect to every cluster and check its credentials and permissions")
	}
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "service":
		return serviceCommand(args, stdout, stderr)
	case "status":
		return statusCommand(args, stdout, stderr)
	case "explain":
		return explainCommand(args, stdout, stderr)
	case "dns-config":
		return dnsConfigCommand(args, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "kube-outpost %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "run", "check-config", "cleanup", "prepare":
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	var lv slog.LevelVar
	flagLevel, flagFormat, err := parseLogFlags(*level, *format)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	lv.Set(flagLevel)
	log := newLogger(stderr, &lv, flagFormat)
	// Flags given on the command line win over the config's log settings.
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	cluster.UserAgent = "kube-outpost/" + version
	daemon.Version = version

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case "check-config":
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		// Warnings first: they stand whatever the host says.
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stderr, "%s: warning: %s\n", *cfgPath, w)
		}
		// The file is fine; whether its service ranges and external IPs
		// fit this host's network is a question for this host's kernel.
		if err := daemon.CheckHost(cfg); err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(stderr, "%s: %s\n", *cfgPath, l)
			}
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok, mode %s\n", *cfgPath, cfg.Mode)
		if cfg.Mode == config.ModeAuto {
			// What auto would pick here now; without root the probes
			// may find no mode usable, which says nothing of the daemon.
			if _, why, err := proxy.Resolve(ctx, cfg); err != nil {
				fmt.Fprintf(stdout, "mode = \"auto\" finds no mode usable here (as this user): %v\n", err)
			} else {
				fmt.Fprintln(stdout, why)
			}
		}
		for _, l := range cfg.Summary() {
			fmt.Fprintln(stdout, l)
		}
		fmt.Fprintln(stdout, cfg.RoutedSummary())
		if *online {
			return checkOnline(ctx, cfg, stdout, stderr)
		}
		return 0
	case "prepare":
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := daemon.Prepare(ctx, cfg, log); err != nil {
			log.Error("cannot prepare the kernel", "mode", cfg.Mode, "err", err)
			return 1
		}
		return 0
	case "cleanup":
		if err := daemon.Cleanup(ctx, log); err != nil {
			fmt.Fprintln(stderr, "cleanup:", err)
			return 1
		}
		log.Info("removed every rule kube-outpost programmed")
		return 0
	}

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !explicit["log-level"] {
		lv.Set(cfg.LogLevel)
	}
	if !explicit["log-format"] {
		log = newLogger(stderr, &lv, cfg.LogFormat)
	}
	log.Info("starting kube-outpost", "version", version, "config", *cfgPath)
	logWarnings(log, *cfgPath, cfg)
	d, err := daemon.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	// Registered before Run, so that an early SIGHUP cannot kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	applyLevel := func(c *config.Config) {
		if !explicit["log-level"] && c.LogLevel != lv.Level() {
			log.Info("log level changed", "from", lv.Level(), "to", c.LogLevel)
			lv.Set(c.LogLevel)
		}
	}
	go reloadOnHUP(ctx, hup, d, *cfgPath, log, applyLevel)
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

func parseLogFlags(level, format string) (slog.Level, config.LogFormat, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return 0, "", fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	switch f := config.LogFormat(strings.ToLower(format)); f {
	case config.LogText, config.LogJSON:
		return l, f, nil
	}
	return 0, "", fmt.Errorf("--log-format %q: want text or json", format)
}

// newLogger logs at level, which a reload may change.
func newLogger(w io.Writer, level slog.Leveler, format config.LogFormat) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// reloadOnHUP re-reads the config on SIGHUP (systemctl reload). A config
// with any problem is refused as a whole, and the running one stays. The log
// level follows the new config at once; apply does that.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, d *daemon.Daemon, path string, log *slog.Logger, apply func(*config.Config)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := config.Load(path)
		if err == nil {
			err = d.Reload(cfg)
		}
		if err != nil {
			log.Error("reload refused; the running configuration stays in force", "config", path, "err", err)
			continue
		}
		logWarnings(log, path, cfg)
		apply(cfg)
	}
}

// logWarnings logs what check-config warns about, once per loaded config:
// at start and at each accepted reload.
func logWarnings(log *slog.Logger, path string, cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn(w, "config", path)
	}
}
