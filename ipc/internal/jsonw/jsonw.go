// Package jsonw appends JSON values exactly as encoding/json's Marshal
// writes them, and reads them back (Reader), without reflection. The ipc
// messages exchanged at start-up use it: a process's first json.Marshal
// or json.Unmarshal builds encoding/json's per-type caches, ~0.1-0.15 ms
// of CPU for one message, on the way to --ready-fd in the supervisor.
package jsonw

import (
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// Object appends JSON object members in order, with the separators.
type Object struct {
	b     []byte
	first bool
}

// Begin starts an object at the end of b.
func Begin(b []byte) Object { return Object{b: append(b, '{'), first: true} }

// End closes the object and returns the bytes.
func (o Object) End() []byte { return append(o.b, '}') }

// key appends the separator and the (plain ASCII) key.
func (o *Object) key(k string) {
	if !o.first {
		o.b = append(o.b, ',')
	}
	o.first = false
	o.b = append(o.b, '"')
	o.b = append(o.b, k...)
	o.b = append(o.b, '"', ':')
}

// String appends member k with the string value v.
func (o *Object) String(k, v string) {
	o.key(k)
	o.b = AppendString(o.b, v)
}

// StringOmitEmpty is String for a field tagged omitempty.
func (o *Object) StringOmitEmpty(k, v string) {
	if v != "" {
		o.String(k, v)
	}
}

// Bool appends member k with the value v.
func (o *Object) Bool(k string, v bool) {
	o.key(k)
	o.b = strconv.AppendBool(o.b, v)
}

// Int appends member k with the value v.
func (o *Object) Int(k string, v int64) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, v, 10)
}

// Uint appends member k with the value v.
func (o *Object) Uint(k string, v uint64) {
	o.key(k)
	o.b = strconv.AppendUint(o.b, v, 10)
}

// Raw appends member k with v, which must already be JSON in
// encoding/json's form (compact, HTML characters escaped).
func (o *Object) Raw(k string, v []byte) {
	o.key(k)
	o.b = append(o.b, v...)
}

// Value appends member k with the value that appendValue appends.
func (o *Object) Value(k string, appendValue func([]byte) []byte) {
	o.key(k)
	o.b = appendValue(o.b)
}

// AppendString appends s as a JSON string the way encoding/json's Marshal
// does: HTML characters (<, >, &), control characters, U+2028 and U+2029
// escaped, and every byte of invalid UTF-8 replaced by \ufffd.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plain(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = appendEscapedASCII(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plain reports whether the ASCII byte c goes into a JSON string as it is
// (DEL does, as in encoding/json).
func plain(c byte) bool {
	return c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// appendEscapedASCII appends the escape of the ASCII byte c.
func appendEscapedASCII(b []byte, c byte) []byte {
	switch c {
	case '\\', '"':
		return append(b, '\\', c)
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
}
