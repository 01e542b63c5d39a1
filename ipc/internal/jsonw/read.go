package jsonw

import (
	"strconv"
	"unicode/utf8"
)

// Reader reads JSON in exactly the form Object writes it, for the members
// expected in the order expected, and fails on anything else: escapes in
// strings, white space, other or repeated members, numbers in another
// form. A caller falls back to encoding/json when it fails, so that only
// input that both read alike is read here. After the first failure every
// call fails.
type Reader struct {
	b   []byte
	ok  bool
	obj []bool // per open object: no member read yet
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b, ok: true} }

// Done reports whether all input was read, in the expected form.
func (r *Reader) Done() bool { return r.ok && len(r.b) == 0 }

func (r *Reader) fail() { r.ok = false }

// lit consumes s.
func (r *Reader) lit(s string) bool {
	if !r.ok || len(r.b) < len(s) || string(r.b[:len(s)]) != s {
		r.fail()
		return false
	}
	r.b = r.b[len(s):]
	return true
}

// Begin consumes the '{' that opens an object.
func (r *Reader) Begin() {
	if r.lit("{") {
		r.obj = append(r.obj, true)
	}
}

// End consumes the '}' that closes the innermost object.
func (r *Reader) End() {
	if r.lit("}") && len(r.obj) > 0 {
		r.obj = r.obj[:len(r.obj)-1]
	}
}

// Key consumes member k's name (and the separator before it).
func (r *Reader) Key(k string) {
	if !r.ok || len(r.obj) == 0 {
		r.fail()
		return
	}
	if !r.obj[len(r.obj)-1] {
		r.lit(",")
	}
	r.obj[len(r.obj)-1] = false
	r.lit(`"` + k + `":`)
}

// Has reports whether member k comes next (for omitempty members).
func (r *Reader) Has(k string) bool {
	if !r.ok || len(r.obj) == 0 {
		return false
	}
	next := `"` + k + `":`
	if !r.obj[len(r.obj)-1] {
		next = "," + next
	}
	return len(r.b) >= len(next) && string(r.b[:len(next)]) == next
}

// String reads a string without escapes, of valid UTF-8 and no control
// characters (encoding/json would escape those, or change them).
func (r *Reader) String() string {
	if !r.lit(`"`) {
		return ""
	}
	for i, c := range r.b {
		switch {
		case c == '"':
			s := r.b[:i]
			if !utf8.Valid(s) {
				r.fail()
				return ""
			}
			r.b = r.b[i+1:]
			return string(s)
		case c == '\\' || c < 0x20:
			r.fail()
			return ""
		}
	}
	r.fail()
	return ""
}

// Bool reads true or false.
func (r *Reader) Bool() bool {
	switch {
	case !r.ok:
		return false
	case len(r.b) >= 4 && string(r.b[:4]) == "true":
		r.b = r.b[4:]
		return true
	case len(r.b) >= 5 && string(r.b[:5]) == "false":
		r.b = r.b[5:]
		return false
	}
	r.fail()
	return false
}

// digits returns the number at the start of the input as strconv reads
// it: an optional '-' (if signed), then 0 or a digit sequence without a
// leading zero, not followed by a fraction or an exponent.
func (r *Reader) digits(signed bool) string {
	if !r.ok {
		return ""
	}
	n := 0
	if signed && n < len(r.b) && r.b[n] == '-' {
		n++
	}
	start := n
	for n < len(r.b) && r.b[n] >= '0' && r.b[n] <= '9' {
		n++
	}
	switch {
	case n == start, n-start > 1 && r.b[start] == '0':
		r.fail()
		return ""
	case n < len(r.b) && (r.b[n] == '.' || r.b[n] == 'e' || r.b[n] == 'E'):
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// Int reads an integer that fits in bits bits.
func (r *Reader) Int(bits int) int64 {
	s := r.digits(true)
	if !r.ok {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		r.fail()
		return 0
	}
	return v
}

// Uint reads a non-negative integer that fits in bits bits.
func (r *Reader) Uint(bits int) uint64 {
	s := r.digits(false)
	if !r.ok {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		r.fail()
		return 0
	}
	return v
}

// Rest returns what is left of the input and consumes it.
func (r *Reader) Rest() []byte {
	if !r.ok {
		return nil
	}
	b := r.b
	r.b = nil
	return b
}
