package api

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzRequest feeds arbitrary bytes to the request reader and dispatcher
// (fake backend, no sockets bound): no input may panic, every reply is a
// single {"return":...} or {"error":{"desc":"bad request: ..."}} object, an
// existing forward survives everything but a successful remove, and reading
// byte by byte gives the request the same meaning as reading it at once.
func FuzzRequest(f *testing.F) {
	for _, row := range goldenRows() {
		f.Add([]byte(row.req))
	}
	for _, seed := range []string{
		addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 80, "guest_addr": "fd00::100", "guest_port": 80}`),
		addReq(`{"proto": "udp", "host_port": 1, "guest_port": 1}`), // busy port
		`{"execute": "remove_hostfwd", "arguments": {"id": 1}}`,
		`{"execute": "list_hostfwd", "arguments": {"a": {"a": 1, "b": [{"a": 1}, {"a": 2, "a": 3}]}}}`,
		"\xff\xfe{}",
		`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1e999, "guest_port": -0}}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
		`{"execute": "list_hostfwd"} {"execute": "add_hostfwd"}`,
	} {
		f.Add([]byte(seed))
	}
	first := addReq(`{"proto": "tcp", "host_port": 8080, "guest_port": 80}`)
	firstEntry := entry(1, "tcp", "0.0.0.0", 8080, "10.0.2.100", 80)
	f.Fuzz(func(t *testing.T, req []byte) {
		s := NewServer(newFakeBackend(), Options{Plan: testPlan(), EnableIPv6: true})
		s.bind = fakeBind
		defer s.Close()
		ctx := context.Background()
		if got := string(s.handle(ctx, []byte(first))); got != idResp(1) {
			t.Fatalf("set-up add: %s", got)
		}

		whole, tooLarge, err := readRequest(bytes.NewReader(req))
		if err != nil {
			t.Fatalf("readRequest: %v", err)
		}
		if tooLarge && len(req) < MaxRequest {
			t.Fatalf("%d-byte request called too large", len(req))
		}
		if !tooLarge {
			byByte, _, err := readRequest(&oneByteReader{s: string(req)})
			if err != nil {
				t.Fatalf("readRequest byte by byte: %v", err)
			}
			if !bytes.HasPrefix(whole, byByte) {
				t.Fatalf("byte-by-byte read %q is not a prefix of %q", byByte, whole)
			}
			_, d1 := parseRequest(whole)
			_, d2 := parseRequest(byByte)
			if d1 != d2 {
				t.Fatalf("meaning differs: whole %q (%q) vs byte by byte %q (%q)", whole, d1, byByte, d2)
			}
		}

		resp := s.handle(ctx, req)
		checkReply(t, resp)
		list := string(s.handle(ctx, []byte(listReq)))
		removed := string(resp) == respEmpty
		if removed == strings.Contains(list, firstEntry) {
			t.Fatalf("after %q (reply %s) the table is %s", req, resp, list)
		}
	})
}

// checkReply checks resp is one JSON object holding exactly "return" or an
// "error" with a "bad request: " description.
func checkReply(t *testing.T, resp []byte) {
	t.Helper()
	var reply map[string]json.RawMessage
	if err := json.Unmarshal(resp, &reply); err != nil || len(reply) != 1 {
		t.Fatalf("reply %q is not a one-member object: %v", resp, err)
	}
	if _, ok := reply["return"]; ok {
		return
	}
	var e struct {
		Desc string `json:"desc"`
	}
	if err := json.Unmarshal(reply["error"], &e); err != nil || !strings.HasPrefix(e.Desc, "bad request: ") {
		t.Fatalf("reply %q is neither a return nor an error", resp)
	}
}
