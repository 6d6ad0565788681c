package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// parseCIDR is netip.ParsePrefix with messages for people, refusing host
// bits: they usually mean a ClusterIP was pasted where the range belongs.
func parseCIDR(s string) (netip.Prefix, error) {
	addr, _, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, errors.New("missing prefix length, like /12")
	}
	if a, err := netip.ParseAddr(addr); err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("invalid IP address")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errors.New("invalid prefix length")
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("not a network address (did you mean %s?)", m)
	}
	return p, nil
}

// str returns v if it is a string. It reports any other type; an absent
// value (nil) gives ok == false silently.
func (c *checker) str(line int, who, key string, v any, want string) (s string, ok bool) {
	s, ok = v.(string)
	if !ok && v != nil {
		c.typeErr(line, who, key, want, v)
	}
	return s, ok
}

func (c *checker) typeErr(line int, who, key, want string, v any) {
	c.add(line, who, "%s: must be %s, not %s", key, want, tomlType(v))
}

// tomlType names the type of a decoded value as the file spells it.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}
