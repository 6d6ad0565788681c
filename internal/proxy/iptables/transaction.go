package iptables

import (
	"bytes"
	"fmt"
	"sort"
)

// transaction builds one iptables-restore script over several tables. In
// each table: chain declarations (which create or flush), then rule
// deletions, then additions, then chain removals, so that a chain is empty
// and unreferenced by the time it is removed.
type transaction struct {
	tables map[string]*tableTx
}

type tableTx struct {
	declared map[string]bool
	order    []string // declared chains, in order
	dels     []string
	adds     []string
	removes  []string
	removed  map[string]bool
}

func newTransaction() *transaction { return &transaction{tables: map[string]*tableTx{}} }

func (t *transaction) table(name string) *tableTx {
	tt := t.tables[name]
	if tt == nil {
		tt = &tableTx{declared: map[string]bool{}, removed: map[string]bool{}}
		t.tables[name] = tt
	}
	return tt
}

func (t *transaction) declare(table, chain string) {
	tt := t.table(table)
	if !tt.declared[chain] {
		tt.declared[chain] = true
		tt.order = append(tt.order, chain)
	}
}

func (t *transaction) declared(table, chain string) bool { return t.table(table).declared[chain] }

func (t *transaction) add(table, chain, rule string) {
	tt := t.table(table)
	tt.adds = append(tt.adds, "-A "+chain+" "+rule)
}

// insert puts a rule at the top of a chain.
func (t *transaction) insert(table, chain, rule string) {
	tt := t.table(table)
	tt.adds = append(tt.adds, "-I "+chain+" 1 "+rule)
}

func (t *transaction) del(table, chain, rule string) {
	tt := t.table(table)
	tt.dels = append(tt.dels, "-D "+chain+" "+rule)
}

// remove flushes and deletes a chain.
func (t *transaction) remove(table, chain string) {
	tt := t.table(table)
	if tt.removed[chain] {
		return
	}
	tt.removed[chain] = true
	t.declare(table, chain)
	tt.removes = append(tt.removes, "-X "+chain)
}

func (t *transaction) empty() bool {
	for _, tt := range t.tables {
		if len(tt.order)+len(tt.dels)+len(tt.adds)+len(tt.removes) > 0 {
			return false
		}
	}
	return true
}

func (t *transaction) script() []byte {
	var b bytes.Buffer
	names := make([]string, 0, len(t.tables))
	for n := range t.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tt := t.tables[n]
		if len(tt.order)+len(tt.dels)+len(tt.adds)+len(tt.removes) == 0 {
			continue // a table without changes would cost a commit
		}
		fmt.Fprintf(&b, "*%s\n", n)
		for _, ch := range tt.order {
			fmt.Fprintf(&b, ":%s - [0:0]\n", ch)
		}
		for _, group := range [][]string{tt.dels, tt.adds, tt.removes} {
			for _, l := range group {
				b.WriteString(l)
				b.WriteByte('\n')
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

// applyTo updates the set of our chains in the kernel after a successful
// restore.
func (t *transaction) applyTo(chains map[string]map[string]bool) {
	for name, tt := range t.tables {
		m := chains[name]
		if m == nil {
			m = map[string]bool{}
			chains[name] = m
		}
		for ch := range tt.declared {
			m[ch] = true
		}
		for ch := range tt.removed {
			delete(m, ch)
		}
	}
}
