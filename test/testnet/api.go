package testnet

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"
)

// APITimeout bounds one API request.
const APITimeout = 5 * time.Second

// APIRequest sends one request to a slirp4netns API socket the way the man
// page says clients must (write, shutdown(SHUT_WR), read to EOF) and returns
// the raw reply.
func APIRequest(sock, req string) ([]byte, error) {
	return APIExchange(sock, true, req)
}

// APIExchange connects to a slirp4netns API socket, writes each chunk in a
// write of its own, shuts down the write side if shut is set, and returns
// what it reads until the server closes: APIRequest's exchange, also in the
// forms clients should not use (a request in pieces, no shutdown).
func APIExchange(sock string, shut bool, chunks ...string) ([]byte, error) {
	c, err := net.DialTimeout("unix", sock, APITimeout)
	if err != nil {
		return nil, fmt.Errorf("api %s: %w", sock, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(APITimeout))
	for _, ch := range chunks {
		if _, err := io.WriteString(c, ch); err != nil {
			return nil, fmt.Errorf("api %s: write: %w", sock, err)
		}
	}
	if shut {
		if err := c.(*net.UnixConn).CloseWrite(); err != nil {
			return nil, fmt.Errorf("api %s: shutdown: %w", sock, err)
		}
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return b, fmt.Errorf("api %s: read: %w", sock, err)
	}
	return b, nil
}

// APIReply is a decoded API reply: {"return": ...} or {"error": {"desc"}}.
// C slirp4netns 1.2.0 answers list_hostfwd with a bare {"entries": [...]};
// that form is accepted too and reported by Bare.
type APIReply struct {
	Return  json.RawMessage `json:"return"`
	Error   *APIError       `json:"error"`
	Entries []Forward       `json:"entries"`
}

// APIError is the body of an {"error"} reply.
type APIError struct {
	Desc string `json:"desc"`
}

// Forward is one entry of list_hostfwd.
type Forward struct {
	ID        int    `json:"id"`
	Proto     string `json:"proto"`
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestAddr string `json:"guest_addr"`
	GuestPort int    `json:"guest_port"`
}

// Bare reports whether the reply had neither "return" nor "error".
func (r *APIReply) Bare() bool { return r.Return == nil && r.Error == nil }

// ParseAPIReply decodes a reply; it must be one JSON object with exactly
// one of "return", "error" or (bare list) "entries".
func ParseAPIReply(b []byte) (*APIReply, error) {
	var r APIReply
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("api reply %q: %w", b, err)
	}
	n := 0
	for _, set := range []bool{r.Return != nil, r.Error != nil, r.Entries != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("api reply %q: want exactly one of return, error, entries", b)
	}
	if r.Error != nil && r.Error.Desc == "" {
		return nil, fmt.Errorf("api reply %q: error without desc", b)
	}
	return &r, nil
}

// Forwards returns the list_hostfwd entries of a reply in either form.
func (r *APIReply) Forwards() ([]Forward, error) {
	if r.Entries != nil {
		return r.Entries, nil
	}
	var ret struct {
		Entries []Forward `json:"entries"`
	}
	if err := json.Unmarshal(r.Return, &ret); err != nil || ret.Entries == nil {
		return nil, fmt.Errorf("list_hostfwd reply %s: no entries (%v)", r.Return, err)
	}
	return ret.Entries, nil
}
