package ebpf

import (
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// destroyer destroys the connected UDP sockets of translations that ended
// (bpf/destroy.c): those of this process's network namespace, which the
// socket iterator walks.
type destroyer struct {
	objs destroyObjects
	iter *link.Iter
}

// loadDestroyer loads the iterator over the hooks' socket storage. It
// fails on kernels before 6.5 (no bpf_sock_destroy); the mode then runs
// without it, as a host without conntrack tools runs the other modes.
func loadDestroyer(sock *ebpf.Map) (*destroyer, error) {
	spec, err := loadDestroy()
	if err != nil {
		return nil, err
	}
	d := &destroyer{}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"ko_sock": sock}}); err != nil {
		return nil, err
	}
	if d.iter, err = link.AttachIter(link.IterOptions{Program: d.objs.DestroyUdp}); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// destroy destroys the connected UDP sockets that hold one of flows.
// run opens the iterator: in this process's network namespace, or the
// one a test gives. The flows go in rounds of what the maps of flows to
// forget hold: a cluster that drops a hundred thousand UDP endpoints in
// one sync must not leave every socket stale.
func (d *destroyer) destroy(flows []flow, run func(func() error) error) error {
	round := int(min(d.objs.KoGone4.MaxEntries(), d.objs.KoGone6.MaxEntries()))
	var errs []error
	for len(flows) > 0 {
		n := min(len(flows), round)
		errs = append(errs, d.destroyRound(flows[:n], run))
		flows = flows[n:]
	}
	return errors.Join(errs...)
}

func (d *destroyer) destroyRound(flows []flow, run func(func() error) error) error {
	var k4 []destroyXlate4
	var k6 []destroyXlate6
	for _, f := range flows {
		if f.svc.addr.Is4() && f.be.addr.Is4() {
			k4 = append(k4, destroyXlate4{Vip: be32(f.svc.addr), Vport: be16(f.svc.port), Backend: be32(f.be.addr), Bport: be16(f.be.port)})
		} else {
			k6 = append(k6, destroyXlate6{Vip: be128(f.svc.addr), Vport: be16(f.svc.port), Backend: be128(f.be.addr), Bport: be16(f.be.port)})
		}
	}
	one := uint8(1)
	var errs []error
	for _, k := range k4 {
		errs = append(errs, d.objs.KoGone4.Put(k, one))
	}
	for _, k := range k6 {
		errs = append(errs, d.objs.KoGone6.Put(k, one))
	}
	if err := errors.Join(errs...); err == nil {
		errs = append(errs, run(func() error {
			r, err := d.iter.Open()
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(io.Discard, r)
			return err
		}))
	}
	for _, k := range k4 {
		errs = append(errs, ignoreMissing(d.objs.KoGone4.Delete(k)))
	}
	for _, k := range k6 {
		errs = append(errs, ignoreMissing(d.objs.KoGone6.Delete(k)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroying UDP sockets of endpoints that left: %w", err)
	}
	return nil
}

func (d *destroyer) close() {
	d.iter.Close()
	d.objs.Close()
}
