package jsonw

import (
	"encoding/json"
	"testing"
)

// stringCases cover every escaping rule encoding/json applies.
var stringCases = []string{
	"", "tap0", "/run/user/1000/netns/x y", `quote " backslash \ slash /`,
	"<script>&amp;</script>", "\b\f\n\r\t\x00\x01\x1f\x7f", "é ü 日本 😀",
	"\u2028\u2029", "bad \xff\xfe utf8 \xe2\x80", "\xed\xa0\x80 surrogate",
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range stringCases {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range stringCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("AppendString(%q) = %s, want x%s", s, got, want)
		}
	})
}

func TestObject(t *testing.T) {
	o := Begin([]byte("["))
	o.String("a", "<")
	o.StringOmitEmpty("skip", "")
	o.StringOmitEmpty("b", "x")
	o.Bool("c", true)
	o.Int("d", -7)
	o.Uint("e", 1<<63)
	o.Raw("f", []byte(`{"g":null}`))
	o.Value("h", func(b []byte) []byte { return Begin(b).End() })
	want := `[{"a":"\u003c","b":"x","c":true,"d":-7,"e":9223372036854775808,"f":{"g":null},"h":{}}`
	if got := string(o.End()); got != want {
		t.Errorf("object %s, want %s", got, want)
	}
}

// TestReader: the forms Reader takes, and some it declines.
func TestReader(t *testing.T) {
	read := func(in string) (string, bool, int64, uint64, bool) {
		r := NewReader([]byte(in))
		r.Begin()
		r.Key("s")
		s := r.String()
		r.Key("b")
		b := r.Bool()
		r.Key("i")
		i := r.Int(64)
		r.Key("u")
		u := r.Uint(8)
		r.End()
		return s, b, i, u, r.Done()
	}
	s, b, i, u, ok := read(`{"s":"é x","b":true,"i":-12,"u":255}`)
	if !ok || s != "é x" || !b || i != -12 || u != 255 {
		t.Errorf("read %q %v %d %d (ok %v)", s, b, i, u, ok)
	}
	for _, in := range []string{
		`{"s":"a\"b","b":true,"i":1,"u":1}`,           // escape
		"{\"s\":\"\xff\",\"b\":true,\"i\":1,\"u\":1}", // invalid UTF-8
		"{\"s\":\"\t\",\"b\":true,\"i\":1,\"u\":1}",   // control character
		`{"s":"","b":1,"i":1,"u":1}`,                  // not a bool
		`{"s":"","b":true,"i":01,"u":1}`,              // leading zero
		`{"s":"","b":true,"i":1.0,"u":1}`,             // fraction
		`{"s":"","b":true,"i":1e2,"u":1}`,             // exponent
		`{"s":"","b":true,"i":-,"u":1}`,               // sign alone
		`{"s":"","b":true,"i":1,"u":256}`,             // overflow
		`{"s":"","b":true,"i":1,"u":-1}`,              // negative unsigned
		`{"s":"", "b":true,"i":1,"u":1}`,              // white space
		`{"s":"","b":true,"i":1,"u":1} `,              // trailing input
		`{"b":true,"s":"","i":1,"u":1}`,               // order
		`{"s":"","b":true,"i":1,"u":1`,                // truncated
	} {
		if _, _, _, _, ok := read(in); ok {
			t.Errorf("%q taken", in)
		}
	}
}
