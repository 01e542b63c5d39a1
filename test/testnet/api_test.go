package testnet

import "testing"

// FuzzParseAPIReply checks that any bytes a server may send are either
// rejected or decoded into a reply with exactly one of its forms, and that a
// list is only ever returned for a list reply.
func FuzzParseAPIReply(f *testing.F) {
	for _, s := range []string{
		`{"return":{"id":1}}`,
		`{"return":{}}`,
		`{"error":{"desc":"bad request: unknown execute"}}`,
		`{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}]}`,
		`{"return":{"entries":[]}}`,
		`{"error":{}}`,
		`{"return":1,"error":{"desc":"x"}}`,
		`null`, `[]`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseAPIReply(b)
		if err != nil {
			return
		}
		forms := 0
		for _, set := range []bool{r.Return != nil, r.Error != nil, r.Entries != nil} {
			if set {
				forms++
			}
		}
		if forms != 1 {
			t.Fatalf("ParseAPIReply(%q) accepted a reply with %d forms", b, forms)
		}
		if r.Error != nil && r.Error.Desc == "" {
			t.Fatalf("ParseAPIReply(%q) accepted an error without desc", b)
		}
		if fw, err := r.Forwards(); err == nil && fw == nil {
			t.Fatalf("Forwards() of %q returned nil without error", b)
		}
	})
}

func TestParseAPIReply(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		bare    bool
		nfw     int // -1: not a list
	}{
		{`{"return":{"id":1}}`, false, false, -1},
		{`{"error":{"desc":"x"}}`, false, false, -1},
		{`{"entries":[{"id":1}]}`, false, true, 1},
		{`{"return":{"entries":[{"id":1},{"id":2}]}}`, false, false, 2},
		{`{"return":{"entries":[]}}`, false, false, 0},
		{`{"error":{}}`, true, false, -1},
		{`{}`, true, false, -1},
		{`{"return":{},"error":{"desc":"x"}}`, true, false, -1},
		{`garbage`, true, false, -1},
	}
	for _, tc := range tests {
		r, err := ParseAPIReply([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseAPIReply(%s): err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if r.Bare() != tc.bare {
			t.Errorf("ParseAPIReply(%s).Bare() = %v", tc.in, r.Bare())
		}
		fw, err := r.Forwards()
		if tc.nfw < 0 {
			if err == nil {
				t.Errorf("Forwards(%s) = %v, want error", tc.in, fw)
			}
		} else if err != nil || len(fw) != tc.nfw {
			t.Errorf("Forwards(%s) = %v, %v; want %d entries", tc.in, fw, err, tc.nfw)
		}
	}
}
