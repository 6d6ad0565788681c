package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
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

// Problems are the problems of a config file, sorted by line. Its text is
// one problem per line, like a compiler's, so that an editor can jump to
// each; errors.Is and errors.As see each problem.
type Problems []*Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

// err returns the problems, sorted by line, or nil when there are none.
func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	slices.SortStableFunc(c.problems, func(a, b *Problem) int { return cmp.Compare(a.Line, b.Line) })
	return Problems(slices.Clone(c.problems))
}
