// Package config turns /etc/kube-outpost/config.toml into a validated Config.
// Nothing downstream parses strings again: CIDRs are netip.Prefix, durations
// are time.Duration, and every problem in a file is reported at once, each
// with the line it stands on.
package config

import (
	"log/slog"
	"net/netip"
	"time"
)

// Mode is the kernel backend that programs the datapath.
type Mode string

const (
	ModeIPTables Mode = "iptables"
	ModeIPVS     Mode = "ipvs"
	ModeNFTables Mode = "nftables"
)

// Config is the whole daemon configuration, validated.
type Config struct {
	Mode Mode

	// MinSyncPeriod is the shortest time between two syncs of the kernel
	// rules: a burst of changes within it becomes one sync. The first change
	// after a quiet period is applied at once.
	MinSyncPeriod time.Duration
	// SyncPeriod bounds how long a failed sync waits before its last retry
	// (backoff grows from MinSyncPeriod up to it).
	SyncPeriod time.Duration
	// FullSyncPeriod is how often every rule is rewritten from scratch, which
	// repairs rules someone else changed.
	FullSyncPeriod time.Duration
	// Masquerade source-NATs proxied traffic so that replies come back through
	// this host even when pods cannot route to its address.
	Masquerade bool
	// MasqueradeMark is the fwmark bit that tags connections to masquerade;
	// one bit, chosen not to clash with kube-proxy's 0x4000 and 0x8000.
	MasqueradeMark uint32
	// IPVSScheduler is the IPVS scheduler of every virtual server in ipvs
	// mode; the kernel needs its ip_vs_<name> module.
	IPVSScheduler string

	// MetricsAddress serves Prometheus metrics at /metrics; the zero value
	// turns it off.
	MetricsAddress netip.AddrPort
	// HealthzAddress serves /healthz, /livez and /readyz; the zero value
	// turns it off. When it equals MetricsAddress, one listener serves all.
	HealthzAddress netip.AddrPort
	// LogLevel and LogFormat apply unless run's --log-level or --log-format
	// is given.
	LogLevel  slog.Level
	LogFormat LogFormat

	Clusters []Cluster
}

// LogFormat is how log records are written.
type LogFormat string

const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// Cluster is one Kubernetes cluster whose services this host reaches.
type Cluster struct {
	// Name is [a-z0-9-], unique, at most 40 characters; used in logs, metrics
	// and rule comments.
	Name string
	// Kubeconfig is an absolute path: Load resolves a relative one against
	// the config file's directory, so the daemon's working directory does
	// not matter.
	Kubeconfig string
	// Context selects a kubeconfig context; empty means current-context.
	Context string
	// ServiceCIDRs: ClusterIPs outside them are refused.
	ServiceCIDRs []netip.Prefix

	// ContextName is the context in use: Context, or the kubeconfig's
	// current-context when Context is empty. Filled by Load from the
	// kubeconfig.
	ContextName string
	// Server is the API server URL of that context's cluster. Filled by Load
	// from the kubeconfig.
	Server string
}

// Defaults for the optional keys.
const (
	DefaultMode           = ModeIPTables
	DefaultMinSyncPeriod  = time.Second
	DefaultSyncPeriod     = 30 * time.Second
	DefaultFullSyncPeriod = time.Hour
	DefaultMasqueradeMark = 0x00100000
	DefaultIPVSScheduler  = "rr"
	DefaultLogLevel       = slog.LevelInfo
	DefaultLogFormat      = LogText
)

// The addresses kube-proxy uses by default, so that existing scrape configs
// and probes find us where they look for it. Only loopback: metrics and
// health say which services exist, which is not for the whole network.
var (
	DefaultMetricsAddress = netip.MustParseAddrPort("127.0.0.1:10249")
	DefaultHealthzAddress = netip.MustParseAddrPort("127.0.0.1:10256")
)

// IPVSSchedulers are the schedulers Linux IPVS offers.
var IPVSSchedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"}
