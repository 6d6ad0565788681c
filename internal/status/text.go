package status

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Nearly every string of a Report or an Explanation comes from a cluster
// or the network: object names, addresses an apiserver wrote that do not
// parse, its error texts, rule comments made of those names. Written raw
// to a terminal, an ESC sequence in a name could rewrite the screen, a
// newline or a carriage return forge a line, and U+202E turn the rest of
// a line around. So the text output escapes every such character, and
// refusal and error texts are bounded in the answer itself.

// maxText bounds a refusal reason or an error text in an answer: one
// service's problems with 10,000 endpoints must not make status unreadable.
const maxText = 512

// maxRendered bounds any string the text output writes: room for a
// bounded text whose every character had to be escaped.
const maxRendered = 4 * maxText

// maxRefusedShown is how many refusals of a cluster the text output of
// status lists; --output json has all.
const maxRefusedShown = 50

// bound is model.BoundText at maxText.
func bound(s string) string { return model.BoundText(s, maxText) }

// escape writes the characters of s that a terminal would act on as Go
// escapes (\x1b, \u202e), and bytes that are not UTF-8 as \xNN: C0 controls
// (newline and tab included: the text output's own come from its format),
// DEL, C1 controls, and Unicode's format characters (bidi overrides and
// isolates, zero-width characters) and line and paragraph separators.
func escape(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafeRune(r):
			b.WriteString(s[i : i+size])
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// unsafeRune says whether a terminal may do anything with r but print it.
func unsafeRune(r rune) bool { return r < 0x20 || unsafeInJSON(r) }

// unsafeInJSON are the unsafe runes that encoding/json writes raw.
func unsafeInJSON(r rune) bool {
	return r == 0x7f || (r >= 0x80 && r <= 0x9f) || unicode.Is(unicode.Cf, r) || unicode.In(r, unicode.Zl, unicode.Zp)
}

// forTerminal returns a deep copy of v whose every string is escaped and
// at most maxRendered bytes long. Walking the value, rather than each
// field where it is printed, keeps a field added later from reaching the
// terminal raw.
func forTerminal[T any](v T) T {
	out := reflect.New(reflect.TypeOf(v)).Elem()
	out.Set(clean(reflect.ValueOf(v)))
	return out.Interface().(T)
}

func clean(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.String:
		c := reflect.New(v.Type()).Elem()
		c.SetString(model.BoundText(escape(v.String()), maxRendered))
		return c
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		c := reflect.New(v.Type().Elem())
		c.Elem().Set(clean(v.Elem()))
		return c
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			c.Index(i).Set(clean(v.Index(i)))
		}
		return c
	case reflect.Struct:
		// Copied whole, then its exported fields cleaned: a time.Time or
		// a netip.AddrPort has no text of its own to clean.
		c := reflect.New(v.Type()).Elem()
		c.Set(v)
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				c.Field(i).Set(clean(v.Field(i)))
			}
		}
		return c
	case reflect.Map, reflect.Interface:
		// None in the answers: a map or an interface added to them must
		// be cleaned here before it can be printed.
		panic(fmt.Sprintf("status: forTerminal cannot clean a %s", v.Type()))
	}
	return v
}

// escapeJSON escapes, in encoding/json's output, the characters it leaves
// raw that a terminal acts on: DEL, C1 controls and Unicode's format
// characters (it escapes C0 controls, U+2028 and U+2029, and replaces
// invalid UTF-8, itself). JSON has them only inside strings, where
// \uXXXX means the same, so a script reads the same value.
func escapeJSON(b []byte) []byte {
	if !bytes.ContainsFunc(b, unsafeInJSON) {
		return b
	}
	var out bytes.Buffer
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case !unsafeInJSON(r):
			out.Write(b[i : i+size])
		case r <= 0xffff:
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			// Outside the BMP (tag characters): a surrogate pair.
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		}
		i += size
	}
	return out.Bytes()
}
