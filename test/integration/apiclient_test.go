package integration

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// API sends a request and decodes the reply, failing the test on a
// transport or syntax error (not on an {"error"} reply).
func API(t *testing.T, sock, req string) *testnet.APIReply {
	t.Helper()
	b, err := testnet.APIRequest(sock, req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := testnet.ParseAPIReply(b)
	if err != nil {
		t.Fatalf("request %s: %v", req, err)
	}
	return r
}

// APIOK is API for requests that must succeed; it returns the "return" value.
func APIOK(t *testing.T, sock, req string) json.RawMessage {
	t.Helper()
	r := API(t, sock, req)
	if r.Error != nil {
		t.Fatalf("request %s: error %q", req, r.Error.Desc)
	}
	return r.Return
}

// AddHostFwd adds a forward and returns its id.
func AddHostFwd(t *testing.T, sock, proto, hostAddr string, hostPort, guestPort int) int {
	t.Helper()
	req := fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":%q,"host_addr":%q,"host_port":%d,"guest_port":%d}}`,
		proto, hostAddr, hostPort, guestPort)
	var ret struct {
		ID *int `json:"id"`
	}
	raw := APIOK(t, sock, req)
	if err := json.Unmarshal(raw, &ret); err != nil || ret.ID == nil {
		t.Fatalf("add_hostfwd: reply %s has no id (%v)", raw, err)
	}
	return *ret.ID
}
