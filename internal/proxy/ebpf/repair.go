package ebpf

import (
	"context"
	"fmt"
)

// Missing implements proxy.Prober: the hooks whose links were detached
// behind the daemon's back (`bpftool link detach`, another agent
// cleaning up the cgroup) and a config map rewritten, after which this
// host's own connects would go untranslated until the next full sync.
// A few system calls, every probe period. Map entries deleted by hand
// are not looked for: that would be a walk of every map, and the
// periodic full sync writes them back.
func (p *Proxier) Missing(context.Context) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dp == nil || !p.dp.attached() {
		return nil, nil
	}
	return p.dp.missing()
}

func (d *datapath) missing() ([]string, error) {
	cgID, err := inode(d.opt.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", d.opt.Cgroup, err)
	}
	var out []string
	for i, l := range d.links {
		if !onCgroup(l, cgID) {
			out = append(out, "hook "+hooks[i].name)
		}
	}
	var c sockConfig
	if err := d.objs.KoConfig.Lookup(uint32(0), &c); err != nil || c.NetnsCookie != d.opt.NetnsCookie {
		out = append(out, "the namespace in ko_config")
	}
	return out, nil
}

// repair attaches again the hooks found detached and rewrites the config
// map: a full sync's part of what Missing finds.
func (d *datapath) repair() error {
	cgID, err := inode(d.opt.Cgroup)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", d.opt.Cgroup, err)
	}
	for i, l := range d.links {
		if onCgroup(l, cgID) {
			continue
		}
		h := hooks[i]
		nl, err := attachHook(d.opt, h, h.prog(&d.objs.sockPrograms), cgID)
		if err != nil {
			return fmt.Errorf("attaching %s to %s again: %w", h.name, d.opt.Cgroup, err)
		}
		l.Close()
		d.links[i] = nl
	}
	var c sockConfig
	if err := d.objs.KoConfig.Lookup(uint32(0), &c); err != nil || c.NetnsCookie != d.opt.NetnsCookie {
		if err := d.objs.KoConfig.Put(uint32(0), sockConfig{NetnsCookie: d.opt.NetnsCookie}); err != nil {
			return fmt.Errorf("writing the config map: %w", err)
		}
	}
	return nil
}
