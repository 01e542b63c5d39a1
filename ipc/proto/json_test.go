package proto

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// randomValue fills every exported field of the struct v points to,
// through reflection, so that a field added later is covered (and makes
// TestEngineStartJSON fail until AppendJSON writes it). Strings are empty
// one time in four (omitempty), otherwise drawn from pieces that need
// every kind of escaping.
func randomValue(r *rand.Rand, v reflect.Value) {
	pieces := []string{"tap0", "<&>", `"\`, "\n\t\x01", "é日😀", "\u2028", "\xff", "/run/x y", "10.0.2.0/24"}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				randomValue(r, v.Field(i))
			}
		}
	case reflect.String:
		var s string
		if r.IntN(4) != 0 {
			for range 1 + r.IntN(3) {
				s += pieces[r.IntN(len(pieces))]
			}
		}
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 1)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(r.Int64N(200000) - 100000)
	case reflect.Uint32, reflect.Uint64, reflect.Uint:
		v.SetUint(uint64(r.Uint32()))
	default:
		panic("randomValue: add kind " + v.Kind().String())
	}
}

// TestEngineStartJSON: AppendJSON writes the bytes json.Marshal writes,
// for random configurations, and they decode back to the same value.
func TestEngineStartJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		var s EngineStart
		randomValue(r, reflect.ValueOf(&s).Elem())
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got := s.AppendJSON([]byte("prefix"))
		if string(got) != "prefix"+string(want) {
			t.Fatalf("case %d: AppendJSON\n%s\nwant\nprefix%s", i, got, want)
		}
		var back EngineStart
		if err := json.Unmarshal(got[len("prefix"):], &back); err != nil {
			t.Fatal(err)
		}
		var wantBack EngineStart
		_ = json.Unmarshal(want, &wantBack)
		if !reflect.DeepEqual(back, wantBack) {
			t.Fatalf("case %d: decoded %+v, want %+v", i, back, wantBack)
		}
	}
}

// TestEngineStartJSONZero: the zero value too (every omitempty omitted).
func TestEngineStartJSONZero(t *testing.T) {
	want, err := json.Marshal(EngineStart{})
	if err != nil {
		t.Fatal(err)
	}
	if got := (EngineStart{}).AppendJSON(nil); string(got) != string(want) {
		t.Errorf("AppendJSON(zero) = %s, want %s", got, want)
	}
}

// plainValue is randomValue with strings that need no escaping, which
// the canonical reader must take.
func plainValue(r *rand.Rand, v reflect.Value) {
	randomValue(r, v)
	plain := []string{"", "tap0", "/run/user/1000/netns/x", "10.0.2.0/24", "é日"}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.String:
			v.SetString(plain[r.IntN(len(plain))])
		}
	}
	walk(v)
}

// TestEngineStartCanonicalRoundTrip: what AppendJSON writes with plain
// strings, DecodeCanonicalJSON reads back; with strings that need escapes
// it declines and leaves the value alone.
func TestEngineStartCanonicalRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		var s EngineStart
		plainValue(r, reflect.ValueOf(&s).Elem())
		var back EngineStart
		if !back.DecodeCanonicalJSON(s.AppendJSON(nil)) || back != s {
			t.Fatalf("case %d: %+v read back as %+v", i, s, back)
		}
	}
	s := EngineStart{Link: "<tap>"}
	var back EngineStart
	back.Link = "kept"
	if back.DecodeCanonicalJSON(s.AppendJSON(nil)) || back.Link != "kept" {
		t.Errorf("escaped string taken, or the value changed: %+v", back)
	}
}

// FuzzEngineStartDecode: whatever DecodeCanonicalJSON takes, json.Unmarshal
// reads the same way, into a value that was not zero either.
func FuzzEngineStartDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		var s EngineStart
		plainValue(r, reflect.ValueOf(&s).Elem())
		f.Add(s.AppendJSON(nil))
	}
	f.Add([]byte(`{"config":{},"link":"tap","tap":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		init := EngineStart{Link: "old", Config: policy.Config{APISocket: "/old", MTU: 9}}
		got, want := init, init
		if !got.DecodeCanonicalJSON(b) {
			if got != init {
				t.Fatalf("declined %q but changed the value to %+v", b, got)
			}
			return
		}
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("took %q, which json.Unmarshal rejects: %v", b, err)
		}
		if got != want {
			t.Fatalf("%q: read %+v, json.Unmarshal %+v", b, got, want)
		}
	})
}
