package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// usableTimeout bounds each mode's Usable: a probe that hangs must not keep
// the daemon from starting in some mode.
const usableTimeout = 10 * time.Second

// Resolve returns the mode cfg names. For mode = "auto" it is the first
// registered mode, by Auto, that can do everything cfg asks (cfg.Asks),
// holds what the clusters' limits allow (Mode.Bounds) and that this host
// can run; why says which it is and what every mode tried
// before it lacked, for the start log and status. The choice is made again
// at every start, never on reload: a datapath does not change under a
// running daemon.
func Resolve(ctx context.Context, cfg *config.Config) (m *Mode, why string, err error) {
	if cfg.Mode != config.ModeAuto {
		if m = Lookup(cfg.Mode); m == nil {
			return nil, "", &NotSupportedError{Mode: cfg.Mode, Err: errors.New("not in this build")}
		}
		return m, "configured", nil
	}
	var candidates []*Mode
	for _, m := range Modes() {
		if m.Auto > 0 {
			candidates = append(candidates, m)
		}
	}
	slices.SortStableFunc(candidates, func(a, b *Mode) int { return cmp.Compare(a.Auto, b.Auto) })
	var passed []string
	for _, m := range candidates {
		if lacks := missing(m, cfg.Asks); len(lacks) > 0 {
			passed = append(passed, fmt.Sprintf("%s cannot do %s", m.Name, strings.Join(lacks, ", ")))
			continue
		}
		if err := cfg.Fits(m.Name, m.Bounds); err != nil {
			passed = append(passed, fmt.Sprintf("%s cannot hold the clusters' limits: %v", m.Name, err))
			continue
		}
		if m.Usable != nil {
			uctx, cancel := context.WithTimeout(ctx, usableTimeout)
			err := m.Usable(uctx, cfg)
			cancel()
			if err != nil {
				passed = append(passed, fmt.Sprintf("%s is not usable here: %v", m.Name, err))
				continue
			}
		}
		why = fmt.Sprintf("mode = \"auto\" chose %s, the first usable of %s", m.Name, names(candidates))
		if len(passed) > 0 {
			why += "; " + strings.Join(passed, "; ")
		}
		return m, why, nil
	}
	return nil, "", &NotSupportedError{Mode: config.ModeAuto,
		Err: fmt.Errorf("no mode of %s can run here: %s", names(candidates), strings.Join(passed, "; "))}
}

func missing(m *Mode, asks config.Capabilities) []string {
	var out []string
	for _, c := range asks {
		if !m.Can.Has(c) {
			out = append(out, string(c))
		}
	}
	return out
}

func names(ms []*Mode) string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Name))
	}
	return strings.Join(out, ", ")
}
