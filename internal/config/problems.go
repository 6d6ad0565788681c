package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	File string
	Line int // 0 when the problem is with the file as a whole
	Msg  string
}

func (p *Problem) Error() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// add records a problem; who, when not empty, names the cluster.
func (c *checker) add(line int, who, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if who != "" {
		msg = who + ": " + msg
	}
	c.problems = append(c.problems, &Problem{File: c.file, Line: line, Msg: msg})
}

// err returns the problems one per line, like a compiler, so that an editor
// can jump to each.
func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	slices.SortStableFunc(c.problems, func(a, b *Problem) int { return cmp.Compare(a.Line, b.Line) })
	merr := &multierror.Error{ErrorFormat: func(errs []error) string {
		lines := make([]string, len(errs))
		for i, err := range errs {
			lines[i] = err.Error()
		}
		return strings.Join(lines, "\n")
	}}
	for _, p := range c.problems {
		merr.Errors = append(merr.Errors, p)
	}
	return merr
}
