package ipvs

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kube-outpost/kube-outpost/internal/config"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// explainer reads back this mode's virtual servers for `kube-outpost
// explain`. It never loads ip_vs (ReadPort).
type explainer struct {
	k         Kernel
	scheduler string
}

// newExplainer opens nothing: the Kernel opens its handles at first use.
func newExplainer(cfg *config.Config, _ *slog.Logger) proxy.Explainer {
	return NewExplainerFor(NewKernel(), cfg.IPVSScheduler)
}

// NewExplainerFor is the explainer over k, which compares virtual servers
// with scheduler ("" for any); for tests of explain above this package.
func NewExplainerFor(k Kernel, scheduler string) proxy.Explainer {
	return &explainer{k: k, scheduler: scheduler}
}

// Share is the weight the backend gives every endpoint.
func (*explainer) Share(int) proxy.EndpointShare { return proxy.EndpointShare{Weight: 1} }

func (e *explainer) ExplainPort(_ context.Context, want proxy.Want) (proxy.PortView, error) {
	v, err := ReadPort(e.k, want.Target, want.Protocol)
	if err != nil {
		return proxy.PortView{}, err
	}
	target := want.Target.String() + "/" + string(want.Protocol)
	bound := "bound to " + Interface
	if !v.Bound {
		bound = "NOT bound to " + Interface
	}
	out := proxy.PortView{Endpoints: []proxy.KernelEndpoint{}, Empty: v.Server == nil, Detail: v.detail()}
	if s := v.Server; s != nil {
		pers := ""
		if s.Persistent {
			pers = fmt.Sprintf(", persistent %ds", s.Timeout)
		}
		out.Lines = []string{fmt.Sprintf("virtual server %s, scheduler %s%s; ClusterIP %s", target, s.Scheduler, pers, bound)}
		for _, d := range s.Destinations {
			out.Endpoints = append(out.Endpoints, proxy.KernelEndpoint{Addr: d.Addr, EndpointShare: proxy.EndpointShare{Weight: d.Weight},
				Conns: fmt.Sprintf("%d active, %d inactive", d.ActiveConns, d.InactiveConns)})
		}
	} else {
		out.Lines = []string{fmt.Sprintf("no virtual server for %s; ClusterIP %s", target, bound)}
	}
	out.Mismatches, out.Notes = v.compare(want, target, e.scheduler)
	return out, nil
}

// ExplainDetail is explain's kernel.detail in this mode.
type ExplainDetail struct {
	// Bound: the ClusterIP is on outpost0, so IPVS receives its packets.
	Bound bool `json:"bound"`
	// Server is nil when IPVS has no virtual server for the port.
	Server *ExplainServer `json:"server,omitempty"`
}

// ExplainServer is a virtual server in explain's JSON.
type ExplainServer struct {
	Scheduler string `json:"scheduler"`
	// Persistent (ClientIP affinity) for TimeoutSeconds.
	Persistent     bool          `json:"persistent"`
	TimeoutSeconds uint32        `json:"timeout_seconds,omitempty"`
	Destinations   []Destination `json:"destinations"`
}

func (v *PortView) detail() ExplainDetail {
	d := ExplainDetail{Bound: v.Bound}
	if s := v.Server; s != nil {
		d.Server = &ExplainServer{Scheduler: s.Scheduler, Persistent: s.Persistent, Destinations: append([]Destination{}, s.Destinations...)}
		if s.Persistent {
			d.Server.TimeoutSeconds = s.Timeout
		}
	}
	return d
}
