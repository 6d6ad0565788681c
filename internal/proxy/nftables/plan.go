package nftables

import (
	"fmt"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// plan is one sync's changes, kept apart by phase so that the transaction
// never refers to an object before it exists nor deletes one still
// referred to: objects are created, chains written, elements deleted
// then added, and last what goes is emptied and deleted. The kernel
// applies the whole transaction or none of it.
type plan struct {
	create   []knftables.Object
	write    []knftables.Object
	delElems []*knftables.Element
	addElems []*knftables.Element
	empty    []knftables.Object // flushes of chains that go
	remove   []knftables.Object // chains first, then what rules referred to
	removeAt []knftables.Object // sets, maps, counters

	// rewrites are the ports without affinity whose service chain gets
	// new rules: what the fast path can write (fastpath.go). rewritesNew
	// says that the kernel lacks one of their chains or counters.
	rewrites    []*model.ServicePort
	rewritesNew bool

	// made and gone are the objects, "kind/name", that this plan creates
	// and deletes, to know what the kernel holds once it ran.
	made, gone map[string]bool
}

func newPlan() *plan { return &plan{made: map[string]bool{}, gone: map[string]bool{}} }

func (pl *plan) isEmpty() bool {
	return len(pl.create)+len(pl.write)+len(pl.delElems)+len(pl.addElems)+len(pl.empty)+len(pl.remove)+len(pl.removeAt) == 0
}

// chain creates a chain, if missing, and writes its rules anew. Only a
// chain the kernel has already (exists) is flushed first: a first full
// sync of 10,000 services would give nft 10,000 flushes of empty chains
// to parse and send.
func (pl *plan) chain(ch *knftables.Chain, rules []*knftables.Rule, exists bool) {
	pl.create = append(pl.create, ch)
	pl.made["chain/"+ch.Name] = true
	if exists {
		pl.write = append(pl.write, flushOf(ch.Name))
	}
	for _, r := range rules {
		r.Chain = ch.Name
		pl.write = append(pl.write, r)
	}
}

// flushOf marks a chain to flush: knftables flushes what it is given.
func flushOf(name string) knftables.Object { return flush{&knftables.Chain{Name: name}} }

// flush wraps an object that the transaction flushes rather than adds.
type flush struct{ knftables.Object }

func (pl *plan) counter(name, text string) {
	pl.create = append(pl.create, &knftables.Counter{Name: name, Comment: comment(text)})
	pl.made["counter/"+name] = true
}

func (pl *plan) affinitySet(f family, name string, secs int64) {
	timeout := time.Duration(secs) * time.Second
	pl.create = append(pl.create, &knftables.Set{Name: name, Type: f.addrType,
		Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &timeout})
	pl.made["set/"+name] = true
}

// container creates a map or set of a cluster, and empties it: only a
// full sync writes one, with every element.
func (pl *plan) container(obj knftables.Object) {
	pl.create = append(pl.create, obj)
	switch o := obj.(type) {
	case *knftables.Map:
		pl.made["map/"+o.Name] = true
		pl.write = append(pl.write, flush{&knftables.Map{Name: o.Name}})
	case *knftables.Set:
		pl.made["set/"+o.Name] = true
		pl.write = append(pl.write, flush{&knftables.Set{Name: o.Name}})
	}
}

// drop deletes an object of ours that exists: kind is chain, map, set or
// counter.
func (pl *plan) drop(kind, name string) {
	id := kind + "/" + name
	if pl.gone[id] {
		return
	}
	pl.gone[id] = true
	switch kind {
	case "chain":
		pl.empty = append(pl.empty, flushOf(name))
		pl.remove = append(pl.remove, &knftables.Chain{Name: name})
	case "map":
		// Emptied first: its elements refer to chains that go too,
		// and a chain still referred to cannot be deleted.
		pl.empty = append(pl.empty, flush{&knftables.Map{Name: name}})
		pl.removeAt = append(pl.removeAt, &knftables.Map{Name: name})
	case "set":
		pl.removeAt = append(pl.removeAt, &knftables.Set{Name: name})
	case "counter":
		pl.removeAt = append(pl.removeAt, &knftables.Counter{Name: name})
	default:
		panic(fmt.Sprintf("nftables: unknown kind %q", kind))
	}
}

// transaction is the plan as one knftables transaction, nil when it has
// nothing to do.
func (pl *plan) transaction(nft knftables.Interface) *knftables.Transaction {
	if pl.isEmpty() {
		return nil
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	for _, o := range pl.create {
		tx.Add(o)
	}
	emit := func(objs []knftables.Object, verb func(knftables.Object)) {
		for _, o := range objs {
			if f, ok := o.(flush); ok {
				tx.Flush(f.Object)
				continue
			}
			verb(o)
		}
	}
	emit(pl.write, tx.Add)
	for _, e := range pl.delElems {
		tx.Delete(e)
	}
	for _, e := range pl.addElems {
		tx.Add(e)
	}
	emit(pl.empty, tx.Add)
	emit(pl.remove, tx.Delete)
	emit(pl.removeAt, tx.Delete)
	return tx
}
