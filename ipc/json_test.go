package ipc

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// messageCases are envelopes with every optional field set or not, and
// bodies that json.Marshal compacts or escapes, or rejects.
var messageCases = []Message{
	{Type: TypeReady},
	{Type: TypeReply, Seq: 18446744073709551615},
	{Type: TypeError, Error: "open <tap0>: \"bad\" \xff \u2028\n"},
	{Type: TypeAddForward, Seq: 3, Body: json.RawMessage(`{"id":1,"proto":"tcp"}`)},
	{Type: "t", Body: json.RawMessage(" { \"a\" : [ 1 , \"<&>\" , null ] }\n")},
	{Type: "t", Body: json.RawMessage(`"\u2028 ` + "\u2028" + `"`)},
	{Type: "t", Body: json.RawMessage(`null`)},
	{Type: "t", Body: json.RawMessage(`{"a":`)},
	{Type: "t", Body: json.RawMessage(`nul`)},
	{Type: "t", Body: json.RawMessage{}},
}

// TestMessageJSON: Send's encoding is json.Marshal's, bytes and errors.
func TestMessageJSON(t *testing.T) {
	for _, m := range messageCases {
		checkMessageJSON(t, m)
	}
}

// checkEncodedBody: a message from NewMessage, encoded as SendBody does,
// is what json.Marshal makes of it.
func checkEncodedBody(t *testing.T, m Message) {
	t.Helper()
	want, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.appendJSON(nil, true)
	if err != nil || string(got) != string(want) {
		t.Fatalf("%+v: encoded\n%s (%v)\nwant\n%s", m, got, err, want)
	}
}

func checkMessageJSON(t *testing.T, m Message) {
	t.Helper()
	want, wantErr := json.Marshal(m)
	got, err := m.appendJSON(nil, false)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%+v: error %v, json.Marshal's %v", m, err, wantErr)
	}
	if err == nil && string(got) != string(want) {
		t.Fatalf("%+v: encoded\n%s\nwant\n%s", m, got, want)
	}
}

func FuzzMessageJSON(f *testing.F) {
	for _, m := range messageCases {
		f.Add(m.Type, m.Seq, m.Error, []byte(m.Body))
	}
	f.Fuzz(func(t *testing.T, typ string, seq uint64, errText string, body []byte) {
		checkMessageJSON(t, Message{Type: typ, Seq: seq, Error: errText, Body: body})
		// SendBody's path: a body from NewMessage is used as it is.
		m, err := NewMessage(typ, map[string]any{"s": errText, "n": seq, "b": body})
		if err != nil {
			t.Fatal(err)
		}
		checkEncodedBody(t, m)
	})
}

// TestNewMessageAppender: a body that encodes itself gives the message
// json.Marshal would have given.
func TestNewMessageAppender(t *testing.T) {
	start := proto.EngineStart{
		Config: policy.Config{MTU: 65520, ExitFD: 3, ReadyFD: 4, APISocket: "/tmp/<api>.sock", TapName: "tap0"},
		Link:   proto.LinkTap,
		Tap:    proto.TapInfo{Name: "tap0", VnetHdr: true, Offloads: 7},
	}
	m, err := NewMessage(TypeEngineStart, start)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(start)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Body) != string(body) {
		t.Errorf("body %s, want %s", m.Body, body)
	}
	checkEncodedBody(t, m)
	var back proto.EngineStart
	if err := m.Decode(&back); err != nil || back != start {
		t.Errorf("decoded %+v (%v), want %+v", back, err, start)
	}
}

// decodeCases are envelopes that the canonical reader takes or declines.
var decodeCases = []string{
	`{"type":"ready"}`,
	`{"type":"reply","seq":7,"error":"bad <thing>"}`,
	`{"type":"engine-start","body":{"config":{"mtu":1500},"link":"tap"}}`,
	`{"type":"t","seq":18446744073709551615,"body":{}}`,
	`{"type":"t","seq":18446744073709551616}`,
	`{"type":"t","seq":01}`,
	`{"type":"t","seq":-1}`,
	`{"type":"t","seq":1e3}`,
	`{"type":"e\"x"}`,
	`{"type":"\u00e9"}`,
	"{\"type\":\"\xff\"}",
	`{"type":"t","body":{"a":1} }`,
	`{"type":"t","body":{"a":1},"x":2}`,
	`{"type":"t","body":null}`,
	`{"type":"t","body":{"a":}}`,
	`{"type":"t","type":"u"}`,
	`{"TYPE":"t"}`,
	`{"type":"t"} `,
	`{"type":"t"`,
	`{"seq":1,"type":"t"}`,
}

// TestDecodeCanonical: what the canonical reader takes, it reads as
// json.Unmarshal does; what encoding/json would reject, it declines.
func TestDecodeCanonical(t *testing.T) {
	for _, s := range decodeCases {
		checkDecodeCanonical(t, []byte(s))
	}
	for _, s := range decodeCases[:4] {
		if _, ok := decodeCanonical([]byte(s)); !ok {
			t.Errorf("canonical %s declined", s)
		}
	}
}

func checkDecodeCanonical(t *testing.T, b []byte) {
	t.Helper()
	got, ok := decodeCanonical(b)
	if !ok {
		return
	}
	var want Message
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%q: read as %+v, but json.Unmarshal fails: %v", b, got, err)
	}
	if got.Type != want.Type || got.Seq != want.Seq || got.Error != want.Error ||
		string(got.Body) != string(want.Body) || (got.Body == nil) != (want.Body == nil) {
		t.Fatalf("%q: read as %+v, json.Unmarshal %+v", b, got, want)
	}
}

func FuzzDecodeCanonical(f *testing.F) {
	for _, s := range decodeCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		buf := bytes.Clone(b)
		checkDecodeCanonical(t, buf)
		// The body must not alias the input (Recv reuses its buffer).
		if m, ok := decodeCanonical(buf); ok {
			clear(buf)
			var want Message
			_ = json.Unmarshal(b, &want)
			if string(m.Body) != string(want.Body) {
				t.Fatalf("%q: body %q changed with the input buffer", b, m.Body)
			}
		}
	})
}

// TestRecvCanonical: a message sent with SendBody arrives through the
// canonical reader, body and all.
func TestRecvCanonical(t *testing.T) {
	a, peer, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := FromFile(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := proto.EngineStart{Config: policy.Config{MTU: 1500, TapName: "tap0"}, Link: proto.LinkTap}
	if err := a.SendBody(TypeEngineStart, 9, start); err != nil {
		t.Fatal(err)
	}
	m, _, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got proto.EngineStart
	if _, ok := decodeCanonical(append([]byte(nil), `{"type":"engine-start","seq":9,"body":`+string(m.Body)+`}`...)); !ok {
		t.Errorf("the envelope SendBody wrote is not canonical: body %s", m.Body)
	}
	if !got.DecodeCanonicalJSON(m.Body) || got != start || m.Seq != 9 || m.Type != TypeEngineStart {
		t.Errorf("received %+v body %+v, want seq 9 and %+v", m, got, start)
	}
}
