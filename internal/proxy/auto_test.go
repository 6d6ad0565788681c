package proxy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// testMode registers a mode that does nothing, at rank auto, usable when
// usable returns nil, within bounds.
func testMode(name config.Mode, auto int, can config.Capabilities, usable func() error, bounds ...config.Bounds) {
	m := &Mode{Name: name, Can: can, Auto: auto,
		New:       func(Env) ([]Backend, error) { return nil, nil },
		InUse:     func(context.Context) bool { return false },
		Cleanup:   func(context.Context, *slog.Logger) error { return nil },
		Explainer: func(*config.Config, *slog.Logger) Explainer { return nil },
	}
	if len(bounds) > 0 {
		m.Bounds = bounds[0]
	}
	if usable != nil {
		m.Usable = func(context.Context, *config.Config) error { return usable() }
	}
	Register(m)
}

var fastUsable error // what the "fast" mode's probe says

func init() {
	all := config.Capabilities{config.CanRoutedClients, config.CanNodePorts, config.CanIPv6}
	// Registered out of rank order: auto goes by rank, not registration.
	testMode("sure", 20, all, nil)
	testMode("fast", 10, config.Capabilities{config.CanIPv6}, func() error { return fastUsable }, config.Bounds{Endpoints: 300000})
	testMode("never", 0, all, nil)
	testMode("spare", 30, all, func() error { return errors.New("no module") })
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cfg     config.Config
		fast    error
		want    config.Mode
		whyHas  []string
		wantErr string
	}{
		{name: "a configured mode is taken as it is", cfg: config.Config{Mode: "never"}, want: "never"},
		{name: "a mode not in the build", cfg: config.Config{Mode: "gone"}, wantErr: `mode "gone" is not supported on this host: not in this build`},
		{name: "auto takes the lowest rank that is usable", cfg: config.Config{Mode: config.ModeAuto}, want: "fast",
			whyHas: []string{`mode = "auto" chose fast, the first usable of fast, sure, spare`}},
		{name: "auto passes over a mode that is not usable, and says why",
			cfg: config.Config{Mode: config.ModeAuto}, fast: errors.New("nft is too old"), want: "sure",
			whyHas: []string{"chose sure", "fast is not usable here: nft is too old"}},
		{name: "auto passes over a mode that cannot do what is asked",
			cfg:  config.Config{Mode: config.ModeAuto, Asks: config.Capabilities{config.CanNodePorts}},
			want: "sure", whyHas: []string{"fast cannot do node ports"}},
		{name: "auto passes over a mode that cannot hold the clusters' limits",
			cfg:  config.Config{Mode: config.ModeAuto, Clusters: []config.Cluster{{Name: "a"}, {Name: "b", MaxEndpoints: 100001}}},
			want: "sure", whyHas: []string{`fast cannot hold the clusters' limits: cluster "b": max_endpoints: the clusters' max_endpoints add up to 300001`}},
		{name: "auto fails when no mode fits, naming each",
			cfg:     config.Config{Mode: config.ModeAuto, Asks: config.Capabilities{config.CanAffinity}},
			wantErr: "no mode of fast, sure, spare can run here: fast cannot do ClientIP session affinity; sure cannot do ClientIP session affinity; spare cannot do ClientIP session affinity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fastUsable = tc.fast
			m, why, err := Resolve(ctx, &tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Name != tc.want {
				t.Errorf("mode %s, want %s", m.Name, tc.want)
			}
			for _, w := range tc.whyHas {
				if !strings.Contains(why, w) {
					t.Errorf("why %q lacks %q", why, w)
				}
			}
		})
	}
}
