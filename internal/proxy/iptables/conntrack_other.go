//go:build !linux

package iptables

import (
	"context"
	"errors"
)

// NewConntrack returns a conntrack table that fails: conntrack exists only
// on Linux.
func NewConntrack() Conntrack { return noConntrack{} }

type noConntrack struct{}

func (noConntrack) Clear(context.Context, Forget) error {
	return errors.New("conntrack needs Linux")
}
