package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// DefaultPinDir is where the maps and links are pinned: a restarted
// daemon takes them over, so the hooks never stop translating.
const DefaultPinDir = config.DefaultEBPFPinDir

// hook is one program and where it attaches.
type hook struct {
	name   string
	attach ebpf.AttachType
	prog   func(*sockPrograms) *ebpf.Program
}

var hooks = []hook{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *sockPrograms) *ebpf.Program { return p.Connect4 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *sockPrograms) *ebpf.Program { return p.Sendmsg4 }},
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(p *sockPrograms) *ebpf.Program { return p.Recvmsg4 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *sockPrograms) *ebpf.Program { return p.Getpeername4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *sockPrograms) *ebpf.Program { return p.Connect6 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *sockPrograms) *ebpf.Program { return p.Sendmsg6 }},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(p *sockPrograms) *ebpf.Program { return p.Recvmsg6 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *sockPrograms) *ebpf.Program { return p.Getpeername6 }},
}

// HookAttachTypes are where the mode attaches its programs on a cgroup,
// for tests that check nothing was left on one.
func HookAttachTypes() []ebpf.AttachType {
	out := make([]ebpf.AttachType, len(hooks))
	for i, h := range hooks {
		out[i] = h.attach
	}
	return out
}

// linkPin is the pin of a hook's link; the maps are pinned by their own
// names (LIBBPF_PIN_BY_NAME in bpf/sock.c) beside them.
func linkPin(dir, name string) string { return filepath.Join(dir, "link_"+name) }

// objectsOptions say where the datapath lives.
type objectsOptions struct {
	// PinDir is a directory on a bpffs, made when missing.
	PinDir string
	// Cgroup is the cgroup v2 directory the hooks attach to: the
	// sockets of its processes and its descendants' are translated.
	Cgroup string
	// NetnsCookie is the network namespace whose sockets are
	// translated; 0 translates none.
	NetnsCookie uint64
	// Endpoints size the load-balancing maps (capacity.go).
	Endpoints int
	// spec, when set, changes the objects before they are loaded: tests
	// make a previous version's layout with it.
	spec func(*ebpf.CollectionSpec)
}

// datapath is the loaded programs and maps.
type datapath struct {
	opt   objectsOptions
	objs  sockObjects
	links []link.Link
	// migrated are new maps that replace pinned ones of another layout
	// (migrate.go), by name: pinned in their place once the programs
	// that use them are attached.
	migrated map[string]*ebpf.Map
	// notCopied are the migrated maps whose entries could not be copied
	// (another key or value layout, per-CPU or socket storage).
	notCopied []string
}

// loadDatapath loads the programs over the pinned maps, or new maps of
// this version's layout where the pinned ones differ (migrate.go). It
// attaches nothing: attach does, once the first sync has filled the maps,
// so that the programs of a previous run serve until then.
func loadDatapath(opt objectsOptions) (_ *datapath, err error) {
	if err := os.MkdirAll(opt.PinDir, 0o700); err != nil {
		return nil, err
	}
	spec, err := loadSock()
	if err != nil {
		return nil, err
	}
	sizeMaps(spec, opt.Endpoints)
	if opt.spec != nil {
		opt.spec(spec)
	}
	old, err := mapsToMigrate(spec, opt.PinDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range old {
			m.Close()
		}
	}()
	for name := range old {
		spec.Maps[name].Pinning = ebpf.PinNone
	}
	d := &datapath{opt: opt}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opt.PinDir}}); err != nil {
		return nil, fmt.Errorf("loading the eBPF programs: %w", err)
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if len(old) > 0 {
		d.migrated = map[string]*ebpf.Map{}
		byName := d.objs.byName()
		for name, m := range old {
			d.migrated[name] = byName[name]
			if !copyMap(m, byName[name]) {
				d.notCopied = append(d.notCopied, name)
			}
		}
	}
	if err := d.objs.KoConfig.Put(uint32(0), sockConfig{NetnsCookie: opt.NetnsCookie}); err != nil {
		return nil, fmt.Errorf("writing the config map: %w", err)
	}
	return d, nil
}

// attach attaches each hook, replacing the program of a pinned link in
// place so that no connect() goes untranslated during a restart, and
// then pins the migrated maps in place of the old ones, which the old
// programs held.
func (d *datapath) attach() error {
	cgID, err := inode(d.opt.Cgroup)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", d.opt.Cgroup, err)
	}
	for _, h := range hooks[len(d.links):] {
		l, err := attachHook(d.opt, h, h.prog(&d.objs.sockPrograms), cgID)
		if err != nil {
			return fmt.Errorf("attaching %s to %s: %w", h.name, d.opt.Cgroup, err)
		}
		d.links = append(d.links, l)
	}
	for name, m := range d.migrated {
		pin := filepath.Join(d.opt.PinDir, name)
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := m.Pin(pin); err != nil {
			return fmt.Errorf("pinning the migrated map %s: %w", name, err)
		}
		delete(d.migrated, name)
	}
	return nil
}

func (d *datapath) attached() bool { return len(d.links) == len(hooks) && len(d.migrated) == 0 }

// attachHook updates the pinned link of h to prog when it is on the
// right cgroup, and otherwise attaches and pins a new one (detaching the
// pinned link of another cgroup only once the new one is attached).
func attachHook(opt objectsOptions, h hook, prog *ebpf.Program, cgID uint64) (link.Link, error) {
	pin := linkPin(opt.PinDir, h.name)
	var stale link.Link
	if old, err := link.LoadPinnedLink(pin, nil); err == nil {
		if onCgroup(old, cgID) {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, fmt.Errorf("replacing the program of %s: %w", pin, err)
			}
			return old, nil
		}
		stale = old
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loading %s: %w", pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: opt.Cgroup, Attach: h.attach, Program: prog})
	if err != nil {
		if stale != nil {
			stale.Close()
		}
		return nil, err
	}
	if stale != nil {
		err = errors.Join(stale.Unpin(), stale.Detach(), stale.Close())
	}
	if err == nil {
		err = l.Pin(pin)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("pinning %s: %w", pin, err)
	}
	return l, nil
}

func onCgroup(l link.Link, cgID uint64) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	cg := info.Cgroup()
	return cg != nil && cg.CgroupId == cgID
}

// inode is a cgroup directory's inode number, which is its cgroup id.
func inode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("no inode number")
	}
	return st.Ino, nil
}

// close lets go of this process's handles; pinned objects stay.
func (d *datapath) close() {
	for _, l := range d.links {
		l.Close()
	}
	d.links = nil
	d.objs.Close()
}

// removePinned detaches the pinned links under dir and removes every
// pin of ours there, then dir itself. Anything else in dir is left, and
// then so is dir.
func removePinned(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), "link_"):
			// Detach, not only unpin: a daemon that still holds the
			// link would keep it attached.
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				errs = append(errs, l.Detach(), l.Close())
			}
		case strings.HasPrefix(e.Name(), "ko_"):
		default:
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
