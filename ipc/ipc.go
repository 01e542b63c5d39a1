// Package ipc carries framed messages and file descriptors between the
// supervisor, the helper and the engine over a SOCK_SEQPACKET socketpair.
//
// Each datagram is one Message encoded as JSON, with any file descriptors
// attached as SCM_RIGHTS. SOCK_SEQPACKET keeps message boundaries and lets the
// receiver notice the peer's death as EOF, which is how the engine learns that
// the supervisor is gone.
package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc/internal/jsonw"
)

// MaxMessage is the largest encoded message accepted, in bytes. The
// messages are small (a configuration, a forward); the kernel refuses a
// SOCK_SEQPACKET datagram above the socket buffer (~208 KiB) anyway.
const MaxMessage = 64 << 10

// maxFDs is the most descriptors one message may carry.
const maxFDs = 8

// Message types exchanged between the processes.
const (
	// TypeHelperConfig: supervisor → helper, body HelperConfig.
	TypeHelperConfig = "helper-config"
	// TypeTap: helper → supervisor, one fd (the TAP), body TapInfo.
	TypeTap = "tap"
	// TypeEngineStart: supervisor → engine, body EngineStart, one fd (TAP or BESS conn).
	TypeEngineStart = "engine-start"
	// TypeReady: engine → supervisor, once the data path runs (and sandbox/seccomp are on).
	TypeReady = "ready"
	// TypeAddForward: supervisor → engine, body Forward, one fd (bound listener/UDP socket).
	TypeAddForward = "add-forward"
	// TypeRemoveForward: supervisor → engine, body Forward (ID only).
	TypeRemoveForward = "remove-forward"
	// TypeReply: answer to a request carrying the request's Seq; Error set on failure.
	TypeReply = "reply"
	// TypeError: a fatal error from the helper or the engine, text in Error.
	TypeError = "error"
	// TypeShutdown: → engine, exit cleanly. The supervisor itself kills the
	// engine at exit (it holds nothing that needs an orderly close); the
	// engine's tests use this to check its own close path.
	TypeShutdown = "shutdown"
)

// Message is one datagram.
type Message struct {
	Type  string          `json:"type"`
	Seq   uint64          `json:"seq,omitempty"`
	Error string          `json:"error,omitempty"`
	Body  json.RawMessage `json:"body,omitempty"`
}

// CanonicalDecoder is a body that can read the form it encodes itself in
// (JSONAppender) without reflection; for anything else it declines, and
// encoding/json decodes. See Decode.
type CanonicalDecoder interface {
	// DecodeCanonicalJSON sets the value from b and returns true when b
	// is in its canonical form, decoding as json.Unmarshal would;
	// otherwise it returns false and leaves the value as it was.
	DecodeCanonicalJSON(b []byte) bool
}

// Decode unmarshals the message body into v. A CanonicalDecoder reads its
// own canonical form itself: a process's first json.Unmarshal costs ~0.1 ms
// building encoding/json's caches.
func (m Message) Decode(v any) error {
	if d, ok := v.(CanonicalDecoder); ok && d.DecodeCanonicalJSON(m.Body) {
		return nil
	}
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("decode %s message: %w", m.Type, err)
	}
	return nil
}

// JSONAppender is a body that encodes itself as encoding/json's Marshal
// would, without reflection (see NewMessage).
type JSONAppender interface {
	AppendJSON(b []byte) []byte
}

// NewMessage builds a message of type t with body v (nil for none). A body
// that is a JSONAppender encodes itself: a process's first json.Marshal
// costs ~0.1 ms building encoding/json's caches, which the message sent
// while starting up need not pay.
func NewMessage(t string, v any) (Message, error) {
	m := Message{Type: t}
	if a, ok := v.(JSONAppender); ok {
		m.Body = a.AppendJSON(nil)
		return m, nil
	}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return Message{}, fmt.Errorf("encode %s message: %w", t, err)
		}
		m.Body = b
	}
	return m, nil
}

// appendJSON appends m as json.Marshal writes it (TestMessageJSON), without
// reflection. Unless bodyEncoded (the body came from NewMessage), the body
// is checked and compacted, with HTML characters escaped, as Marshal does
// with a json.RawMessage.
func (m Message) appendJSON(b []byte, bodyEncoded bool) ([]byte, error) {
	o := jsonw.Begin(b)
	o.String("type", m.Type)
	if m.Seq != 0 {
		o.Uint("seq", m.Seq)
	}
	o.StringOmitEmpty("error", m.Error)
	switch {
	case len(m.Body) == 0:
	case bodyEncoded:
		o.Raw("body", m.Body)
	default:
		var compact bytes.Buffer
		if err := json.Compact(&compact, m.Body); err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		var escaped bytes.Buffer
		json.HTMLEscape(&escaped, compact.Bytes())
		o.Raw("body", escaped.Bytes())
	}
	return o.End(), nil
}

// decodeCanonical reads a message in the form appendJSON writes, with no
// escape in its strings and an object as its body (ok false for anything
// else, which encoding/json then decodes), as json.Unmarshal would read
// it (FuzzDecodeCanonical). The body is a copy: b is the receive buffer.
func decodeCanonical(b []byte) (Message, bool) {
	var m Message
	r := jsonw.NewReader(b)
	r.Begin()
	r.Key("type")
	m.Type = r.String()
	if r.Has("seq") {
		r.Key("seq")
		m.Seq = r.Uint(64)
	}
	if r.Has("error") {
		r.Key("error")
		m.Error = r.String()
	}
	if r.Has("body") {
		r.Key("body")
		// The body runs to the envelope's closing brace, the last byte.
		rest := r.Rest()
		if len(rest) < 3 || rest[0] != '{' || rest[len(rest)-2] != '}' || rest[len(rest)-1] != '}' {
			return Message{}, false
		}
		body := rest[:len(rest)-1]
		if !json.Valid(body) {
			return Message{}, false
		}
		m.Body = bytes.Clone(body)
		return m, true
	}
	r.End()
	if !r.Done() {
		return Message{}, false
	}
	return m, true
}

// Conn is one end of an ipc socketpair. Send and Recv may be called from
// different goroutines; concurrent Sends are serialised.
type Conn struct {
	uc  *net.UnixConn
	smu sync.Mutex
	rmu sync.Mutex
	buf []byte
	oob []byte
}

// Pair makes a connected SOCK_SEQPACKET socketpair. The first is ours; the
// second is a file to hand to a child process (it is not close-on-exec
// once passed through exec.Cmd.ExtraFiles).
func Pair() (*Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	c, err := FromFile(os.NewFile(uintptr(fds[0]), "ipc"))
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return c, os.NewFile(uintptr(fds[1]), "ipc-peer"), nil
}

// FromFD adopts an inherited descriptor (e.g. fd 3 of a child).
func FromFD(fd int) (*Conn, error) {
	return FromFile(os.NewFile(uintptr(fd), "ipc"))
}

// FromFile adopts f; f is closed (the Conn holds a duplicate).
func FromFile(f *os.File) (*Conn, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("adopt ipc fd: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("adopt ipc fd: not a unix socket (%T)", nc)
	}
	return &Conn{
		uc:  uc,
		buf: make([]byte, MaxMessage),
		oob: make([]byte, unix.CmsgSpace(maxFDs*4)),
	}, nil
}

// Send writes m with the given files attached. The caller keeps ownership of
// the files (they are duplicated into the receiver).
func (c *Conn) Send(m Message, files ...*os.File) error {
	return c.send(m, false, files)
}

// send is Send; bodyEncoded says that m.Body came from NewMessage, so is
// already as json.Marshal writes it (compact, HTML characters escaped).
func (c *Conn) send(m Message, bodyEncoded bool, files []*os.File) error {
	b, err := m.appendJSON(nil, bodyEncoded)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.Type, err)
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("send %s: message of %d bytes exceeds %d", m.Type, len(b), MaxMessage)
	}
	if len(files) > maxFDs {
		return fmt.Errorf("send %s: %d fds exceed %d", m.Type, len(files), maxFDs)
	}
	var oob []byte
	if len(files) > 0 {
		fds, err := rawFDs(files)
		if err != nil {
			return fmt.Errorf("send %s: %w", m.Type, err)
		}
		oob = unix.UnixRights(fds...)
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	_, _, err = c.uc.WriteMsgUnix(b, oob, nil)
	// The descriptors must stay open until the kernel has duplicated them.
	runtime.KeepAlive(files)
	if err != nil {
		return fmt.Errorf("send %s: %w", m.Type, err)
	}
	return nil
}

// rawFDs returns the descriptor numbers of files without (*os.File).Fd,
// which would switch a shared socket or TAP back to blocking mode for every
// process holding it, so that the receiver's pending reads could no longer
// be interrupted.
func rawFDs(files []*os.File) ([]int, error) {
	fds := make([]int, len(files))
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("fd of %s: %w", f.Name(), err)
		}
		if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return nil, fmt.Errorf("fd of %s: %w", f.Name(), err)
		}
	}
	return fds, nil
}

// SendBody is NewMessage followed by Send.
func (c *Conn) SendBody(t string, seq uint64, body any, files ...*os.File) error {
	m, err := NewMessage(t, body)
	if err != nil {
		return err
	}
	m.Seq = seq
	return c.send(m, true, files)
}

// Recv reads one message and any attached files. It returns io.EOF when the
// peer has closed its end.
func (c *Conn) Recv() (Message, []*os.File, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.buf, c.oob)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) {
			return Message{}, nil, io.EOF
		}
		return Message{}, nil, fmt.Errorf("recv: %w", err)
	}
	files, ferr := parseRights(c.oob[:oobn])
	if n == 0 && oobn == 0 {
		return Message{}, nil, io.EOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll(files)
		return Message{}, nil, fmt.Errorf("recv: message truncated")
	}
	if ferr != nil {
		closeAll(files)
		return Message{}, nil, ferr
	}
	m, ok := decodeCanonical(c.buf[:n])
	if !ok {
		if err := json.Unmarshal(c.buf[:n], &m); err != nil {
			closeAll(files)
			return Message{}, nil, fmt.Errorf("recv: decode: %w", err)
		}
	}
	return m, files, nil
}

// Close closes the connection; a blocked Recv returns.
func (c *Conn) Close() error { return c.uc.Close() }

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("recv: parse control message: %w", err)
	}
	var files []*os.File
	for _, cm := range msgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "ipc-fd"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
