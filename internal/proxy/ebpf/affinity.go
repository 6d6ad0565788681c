package ebpf

import (
	"errors"

	"github.com/cilium/ebpf"
)

func affKey(cookie uint64, s svcID) sockAffKey {
	return sockAffKey{Netns: cookie, Addr: be128(s.addr), Port: be16(s.port), Proto: s.proto}
}

// forgetAffinity deletes the affinity entries that name a backend their
// service no longer has. Until then a connect() may still be sent to it,
// as to a slot being removed; once its backend entry is gone, the hook
// picks anew.
func (p *Proxier) forgetAffinity() {
	var lost []stuck
	for _, w := range p.w {
		lost = append(lost, w.takeUnstuck()...)
	}
	if len(lost) == 0 || p.dp == nil {
		return
	}
	m := p.dp.objs.KoAffinity
	var errs []error
	for _, l := range lost {
		k := affKey(p.cookie, l.svc)
		var v sockAffValue
		if err := m.Lookup(k, &v); err != nil || v.BackendId != l.id {
			continue
		}
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		p.log.Warn("could not forget the affinity to endpoints that left", "err", err)
	}
}
