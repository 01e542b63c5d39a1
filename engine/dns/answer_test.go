package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

// TestValidAnswer checks which upstream datagrams count as the answer to a
// query: only the header and the question are compared; the records are
// relayed as they came.
func TestValidAnswer(t *testing.T) {
	q, err := parseQuery(query(t, "A.Test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	reply := func(edit func(m *mdns.Msg)) []byte {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion("a.test.", mdns.TypeA)
		m.Id = q.Header.ID
		m.Response = true
		if edit != nil {
			edit(m)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		b         []byte
		wantOK    bool
		wantRcode int
	}{
		{"same question, other case", reply(nil), true, mdns.RcodeSuccess},
		{"refused", reply(func(m *mdns.Msg) { m.Rcode = mdns.RcodeRefused }), true, mdns.RcodeRefused},
		{"error without question", reply(func(m *mdns.Msg) { m.Question = nil; m.Rcode = mdns.RcodeFormatError }), true, mdns.RcodeFormatError},
		{"success without question", reply(func(m *mdns.Msg) { m.Question = nil }), false, 0},
		{"other id", reply(func(m *mdns.Msg) { m.Id++ }), false, 0},
		{"not a response", reply(func(m *mdns.Msg) { m.Response = false }), false, 0},
		{"other name", reply(func(m *mdns.Msg) { m.Question[0].Name = "evil.test." }), false, 0},
		{"other type", reply(func(m *mdns.Msg) { m.Question[0].Qtype = mdns.TypeAAAA }), false, 0},
		{"two questions", reply(func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) }), false, 0},
		{"records the parser does not read", append(reply(nil), 0xde, 0xad), true, mdns.RcodeSuccess},
		{"truncated header", reply(nil)[:11], false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcode, ok := validAnswer(tc.b, q)
			if ok != tc.wantOK || (ok && int(rcode) != tc.wantRcode) {
				t.Fatalf("validAnswer = %d, %v; want %d, %v", rcode, ok, tc.wantRcode, tc.wantOK)
			}
		})
	}
}

// TestServfailAnswersTheQuery checks the SERVFAIL built when no upstream
// answers: same id, opcode, RD and question, RA set.
func TestServfailAnswersTheQuery(t *testing.T) {
	q, err := parseQuery(query(t, "a.test.", mdns.TypeAAAA))
	if err != nil {
		t.Fatal(err)
	}
	b, err := servfail(q)
	if err != nil {
		t.Fatal(err)
	}
	m := new(mdns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if !m.Response || m.Id != q.Header.ID || m.Rcode != mdns.RcodeServerFailure || !m.RecursionDesired || !m.RecursionAvailable ||
		len(m.Question) != 1 || m.Question[0].Name != "a.test." || m.Question[0].Qtype != mdns.TypeAAAA {
		t.Fatalf("SERVFAIL answer %v", m)
	}
}
