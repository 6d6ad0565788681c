// Package config turns /etc/kube-outpost/config.toml into a validated Config.
// Nothing downstream parses strings again: CIDRs are netip.Prefix, durations
// are time.Duration, and every problem in a file is reported at once, each
// with the line it stands on.
package config

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// Mode names the datapath that programs the kernel; the modes linked into
// the binary register themselves (modes.go).
type Mode string

// ModeAuto lets the daemon pick, at each start, the first mode this host can
// run that can do what the config asks (internal/proxy.Resolve).
const ModeAuto Mode = "auto"

// Config is the whole daemon configuration, validated.
type Config struct {
	Mode Mode
	// Asks is what the config asks of its mode (routed clients, node
	// ports, ...): mode = "auto" picks only among modes that can do it.
	// Filled by Load.
	Asks Capabilities

	// MinSyncPeriod is the shortest time from the start of one sync of the
	// kernel rules to the start of the next, as kube-proxy's
	// --iptables-min-sync-period; 0, the default, sets none. Whatever it
	// is, changes that arrive while a sync runs merge into the next one,
	// which waits for a bounded fraction of the last one's duration
	// (internal/syncrunner); the first change after a quiet period is
	// applied at once.
	MinSyncPeriod time.Duration
	// SyncPeriod bounds how long a failed sync waits before its last retry
	// (backoff grows from MinSyncPeriod, or 100 ms when that is shorter,
	// up to it).
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
	// EBPFCgroup is the cgroup v2 directory ebpf mode's hooks attach to:
	// the sockets of its processes and its descendants' are translated.
	// "": the root of the cgroup v2 hierarchy, found at start from the
	// mount table (its place differs between hybrid and pure v2 hosts).
	EBPFCgroup string
	// EBPFPinDir is the bpffs directory ebpf mode pins its maps and links
	// in, for a restarted daemon to adopt; a child of DefaultBPFFS.
	EBPFPinDir string

	// MetricsAddress serves Prometheus metrics at /metrics; the zero value
	// turns it off.
	MetricsAddress netip.AddrPort
	// ServiceMetrics exports each service port's new connections, where
	// the mode counts them (nftables): off by default, a series per
	// service port is a lot of series.
	ServiceMetrics bool
	// Profiling serves Go's profiles at /debug/pprof/ on MetricsAddress,
	// as kube-proxy's --profiling does on its metrics address: off by
	// default, since a CPU profile costs the daemon CPU while it runs and
	// a heap profile shows the names of the services it holds.
	Profiling bool
	// HealthzAddress serves /healthz, /livez and /readyz; the zero value
	// turns it off. When it equals MetricsAddress, one listener serves all.
	HealthzAddress netip.AddrPort
	// LogLevel and LogFormat apply unless run's --log-level or --log-format
	// is given.
	LogLevel  slog.Level
	LogFormat LogFormat
	// StatusSocket is the unix socket `kube-outpost status` and `kube-outpost
	// explain` ask the daemon on; "" turns it off.
	StatusSocket string
	// RoutedClients are the source ranges of hosts routed through this
	// one that reach the clusters' services as this host does; routed
	// packets from anywhere else are not served (node ports excepted).
	// Empty by default.
	RoutedClients []netip.Prefix
	// StateDir is where each cluster's last known state is kept, to be
	// served after a restart while its apiserver cannot be reached; ""
	// keeps none.
	StateDir string
	// StaleStateMaxAge is how old a kept state may be and still be
	// served at start; 0 serves none (they are still written).
	StaleStateMaxAge time.Duration
	// DNS is the DNS server for the clusters' service names ([dns]).
	DNS DNS

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
	// LocalServiceCIDR, when valid, is where this host reaches the
	// cluster's ClusterIPs of its family: each is mapped 1:1, at the same
	// offset, from the cluster's service range of that family (exactly one,
	// of the same size), so that clusters with the same service range can
	// be reached side by side. The zero value maps nothing.
	LocalServiceCIDR netip.Prefix

	// Namespaces limits the watch to these namespaces (empty: all);
	// ExcludeNamespaces leaves these out. At most one of the two is set.
	Namespaces        []string
	ExcludeNamespaces []string
	// ServiceSelector is a Kubernetes label selector on Services ("" for
	// all), validated by Load.
	ServiceSelector string

	// Reach is how packets get from this host to the cluster's endpoints.
	Reach reach.Kind
	// NodeAddressTypes is the order in which a node's addresses are
	// preferred when Reach is nodeport or routes (default InternalIP).
	NodeAddressTypes []string
	// PodCIDRs are the ranges the cluster's nodes take their pod CIDRs
	// from (pod_cidrs): with reach = "routes", a node's pod CIDR is routed
	// only inside them. Required with reach = "routes", unused otherwise.
	PodCIDRs []netip.Prefix
	// ServeNodePorts makes this host answer on its own non-loopback
	// addresses at each service's nodePort, as a node would.
	ServeNodePorts bool
	// AllowExternalIPs: externalIPs and LoadBalancer ingress IPs inside
	// these ranges are programmed; none is when it is empty.
	AllowExternalIPs []netip.Prefix
	// EndpointCIDRs, when not empty, is where endpoints may be: others are
	// dropped.
	EndpointCIDRs []netip.Prefix
	// MaxServices, MaxEndpointsPerPort and MaxEndpoints are the
	// cluster's limits (limits.go); 0 stands for the default.
	MaxServices, MaxEndpointsPerPort, MaxEndpoints int
	// DNSZone is the zone of the cluster's service names,
	// <svc>.<ns>.svc.<zone>: dns_zone, lowercase without the final dot,
	// or <name>.internal. DNSDefault: the cluster also answers
	// cluster.local (at most one cluster does).
	DNSZone    string
	DNSDefault bool

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
	DefaultMode           = ModeAuto
	DefaultMinSyncPeriod  = 0
	DefaultSyncPeriod     = 30 * time.Second
	DefaultFullSyncPeriod = time.Hour
	DefaultMasqueradeMark = 0x00100000
	DefaultIPVSScheduler  = "rr"
	// DefaultBPFFS is where the bpffs is mounted, the one place of it the
	// ebpf mode's unit drop-in lets the daemon write.
	DefaultBPFFS      = "/sys/fs/bpf"
	DefaultEBPFPinDir = DefaultBPFFS + "/kube-outpost"
	DefaultLogLevel   = slog.LevelInfo
	DefaultLogFormat  = LogText
	// DefaultStatusSocket is under the unit's RuntimeDirectory.
	DefaultStatusSocket = "/run/kube-outpost/status.sock"
	// DefaultStateDir is the unit's StateDirectory, the one place besides
	// the runtime directory the sandbox lets the daemon write.
	DefaultStateDir         = "/var/lib/kube-outpost"
	DefaultStaleStateMaxAge = 24 * time.Hour
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
