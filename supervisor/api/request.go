package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// MaxRequest is the size a request must stay below, as in the C version
// (which reads into a 4096-byte buffer and rejects a full one).
const MaxRequest = 4096

// Error descriptions, byte for byte those of the C slirp4netns 1.2.0; each is
// sent as {"error":{"desc":"bad request: <desc>"}}.
const (
	descParse          = "cannot parse JSON"
	descNotObject      = "json_object() failed"
	descNoExecute      = "no execute found"
	descUnknownExecute = "unknown execute"
	descTooLarge       = "too large message"
	descAddPrefix      = "add_hostfwd: "
	descAddFailed      = "add_hostfwd: slirp_add_hostfwd failed"
	descRemoveID       = "remove_hostfwd: bad arguments.id"
	descRemoveFailed   = "remove_hostfwd: slirp_remove_hostfwd failed"
)

// Commands ("execute" values).
const (
	cmdAdd    = "add_hostfwd"
	cmdList   = "list_hostfwd"
	cmdRemove = "remove_hostfwd"
)

var okEmpty = []byte(`{"return":{}}`)

type errorBody struct {
	Error struct {
		Desc string `json:"desc"`
	} `json:"error"`
}

func errorResponse(desc string) []byte {
	var b errorBody
	b.Error.Desc = "bad request: " + desc
	return mustMarshal(b)
}

type addReturn struct {
	Return struct {
		ID int `json:"id"`
	} `json:"return"`
}

// listEntry's field order is the wire order: id, proto, host_addr,
// host_port, guest_addr, guest_port.
type listEntry struct {
	ID        int    `json:"id"`
	Proto     string `json:"proto"`
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestAddr string `json:"guest_addr"`
	GuestPort int    `json:"guest_port"`
}

// listReturn follows the man page, {"return":{"entries":[...]}}. The C
// slirp4netns 1.2.0 binary sends {"entries":[...]} without the "return"
// wrapper, unlike every other reply; clients that parse the documented form
// (and QMP-style clients generally) expect the wrapper.
type listReturn struct {
	Return struct {
		Entries []listEntry `json:"entries"`
	} `json:"return"`
}

// mustMarshal encodes the fixed response types above, which cannot fail.
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("api: marshal response: " + err.Error())
	}
	return b
}

// readRequest reads one request: until EOF (the client's SHUT_WR), or until
// the bytes read hold a complete JSON value or a syntax error, so that a
// request split over several writes works and a client that never shuts
// down its write side is still answered. tooLarge reports MaxRequest bytes
// or more. err is the read error that ended the request, if any (a timeout
// still returns what was read).
func readRequest(r io.Reader) (req []byte, tooLarge bool, err error) {
	buf := make([]byte, 0, MaxRequest)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) >= MaxRequest {
			return nil, true, nil
		}
		if errors.Is(err, io.EOF) {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
		if n > 0 && requestComplete(buf) {
			return buf, false, nil
		}
	}
}

// requestComplete reports whether buf starts with a complete JSON value, or
// with bytes no continuation can make valid; either way more input cannot
// change the answer.
func requestComplete(buf []byte) bool {
	var v json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(buf))
	err := dec.Decode(&v)
	if err == nil {
		// A number is only known to be whole once a byte follows it:
		// "0" may be the start of "0.A".
		return !isNumber(v) || dec.InputOffset() < int64(len(buf))
	}
	var syntaxErr *json.SyntaxError
	return errors.As(err, &syntaxErr)
}

func isNumber(v json.RawMessage) bool {
	return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))
}

// handle answers one request. It never panics on any input.
func (s *Server) handle(ctx context.Context, req []byte) []byte {
	msg, desc := parseRequest(req)
	if desc != "" {
		return errorResponse(desc)
	}
	execute, ok := jsonString(msg["execute"])
	if !ok {
		return errorResponse(descNoExecute)
	}
	args := objectMembers(msg["arguments"])
	switch execute {
	case cmdAdd:
		return s.add(ctx, args)
	case cmdList:
		return s.list()
	case cmdRemove:
		return s.remove(ctx, args)
	default:
		return errorResponse(descUnknownExecute)
	}
}

// parseRequest decodes the first JSON value of req (trailing bytes are
// ignored, as the C's parser does) and returns its members, or the error
// description.
func parseRequest(req []byte) (map[string]json.RawMessage, string) {
	var raw json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(req)).Decode(&raw); err != nil {
		return nil, descParse
	}
	// The C's parser rejects duplicate member names; accepting them would
	// make "which one counts" differ between us and the client's intent.
	if hasDuplicateKeys(raw) {
		return nil, descParse
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, descNotObject
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, descParse
	}
	return msg, ""
}

// hasDuplicateKeys reports whether any object in the valid JSON value raw,
// at any depth, names a member twice.
func hasDuplicateKeys(raw []byte) bool {
	type frame struct {
		object  bool
		wantKey bool
		keys    map[string]struct{}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil {
			return true
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].object {
			top := &stack[n-1]
			if top.wantKey {
				key, _ := tok.(string)
				if _, dup := top.keys[key]; dup {
					return true
				}
				top.keys[key] = struct{}{}
				top.wantKey = false
				continue
			}
			top.wantKey = true // tok is this member's value
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, frame{object: d == '{', wantKey: true, keys: map[string]struct{}{}})
		}
	}
}

// objectMembers returns the members of raw when it is an object, else none:
// absent or non-object "arguments" then fail on their first required field.
func objectMembers(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var str string
	if json.Unmarshal(raw, &str) != nil {
		return "", false
	}
	return str, true
}

// add validates, binds and hands a new forward to the backend. Adds and
// removes run one at a time so that an id is consumed only by an add that
// succeeded.
func (s *Server) add(ctx context.Context, args map[string]json.RawMessage) []byte {
	fwd, err := policy.ParseHostFwd(policy.HostFwdArgs{
		Proto:     args["proto"],
		HostAddr:  args["host_addr"],
		HostPort:  args["host_port"],
		GuestAddr: args["guest_addr"],
		GuestPort: args["guest_port"],
	}, s.opts.Plan, s.opts.EnableIPv6)
	if err != nil {
		return errorResponse(descAddPrefix + err.Error())
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if ctx.Err() != nil {
		return errorResponse(descAddFailed)
	}
	id := s.lastID + 1
	file, err := s.bind(ctx, fwd)
	if err != nil {
		s.logf("api: add_hostfwd: %v", err)
		return errorResponse(descAddFailed)
	}
	if err := s.be.AddForward(ctx, forwardMessage(id, fwd), file); err != nil {
		file.Close()
		s.logf("api: add_hostfwd %s %s: engine: %v", fwd.Proto, hostString(fwd), err)
		return errorResponse(descAddFailed)
	}
	s.mu.Lock()
	s.lastID = id
	s.fwds = append(s.fwds, &forward{id: id, rule: fwd, file: file})
	s.mu.Unlock()
	var ret addReturn
	ret.Return.ID = id
	return mustMarshal(ret)
}

func forwardMessage(id int, fwd policy.HostFwd) proto.Forward {
	return proto.Forward{
		ID:        id,
		Proto:     fwd.Proto,
		GuestAddr: fwd.GuestAddr.String(),
		GuestPort: int(fwd.GuestPort),
		HostAddr:  fwd.HostAddr.String(),
		HostPort:  int(fwd.HostPort),
	}
}

func hostString(fwd policy.HostFwd) string {
	return netip.AddrPortFrom(fwd.HostAddr, fwd.HostPort).String()
}

func (s *Server) list() []byte {
	var ret listReturn
	ret.Return.Entries = []listEntry{} // "[]", never "null"
	s.mu.Lock()
	for _, f := range s.fwds {
		ret.Return.Entries = append(ret.Return.Entries, listEntry{
			ID:        f.id,
			Proto:     f.rule.Proto,
			HostAddr:  f.rule.HostAddr.String(),
			HostPort:  int(f.rule.HostPort),
			GuestAddr: f.rule.GuestAddr.String(),
			GuestPort: int(f.rule.GuestPort),
		})
	}
	s.mu.Unlock()
	return mustMarshal(ret)
}

// remove asks the backend to stop serving a forward, then forgets it and
// closes its host socket. When the backend fails the forward stays listed,
// as in the C version.
func (s *Server) remove(ctx context.Context, args map[string]json.RawMessage) []byte {
	id, ok := policy.ParseHostFwdID(args["id"])
	if !ok {
		return errorResponse(descRemoveID)
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.lookup(id) == nil {
		return errorResponse(descRemoveID)
	}
	if err := s.be.RemoveForward(ctx, id); err != nil {
		s.logf("api: remove_hostfwd %d: engine: %v", id, err)
		return errorResponse(descRemoveFailed)
	}
	if f := s.forget(id); f != nil {
		closeQuietly(f.file)
	}
	return okEmpty
}

func (s *Server) lookup(id int) *forward {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.fwds {
		if f.id == id {
			return f
		}
	}
	return nil
}

func (s *Server) forget(id int) *forward {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.fwds {
		if f.id == id {
			s.fwds = append(s.fwds[:i:i], s.fwds[i+1:]...)
			return f
		}
	}
	return nil
}

func closeQuietly(f *os.File) {
	if f != nil {
		_ = f.Close() // the engine holds its own copy; nothing to report
	}
}
