// Package ipc carries framed messages and file descriptors between the
// supervisor, the helper and the engine over a SOCK_SEQPACKET socketpair.
//
// Each datagram is one Message encoded as JSON, with any file descriptors
// attached as SCM_RIGHTS. SOCK_SEQPACKET keeps message boundaries and lets the
// receiver notice the peer's death as EOF, which is how the engine learns that
// the supervisor is gone.
package ipc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
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

// Decode unmarshals the message body into v.
func (m Message) Decode(v any) error {
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("decode %s message: %w", m.Type, err)
	}
	return nil
}

// NewMessage builds a message of type t with body v (nil for none).
func NewMessage(t string, v any) (Message, error) {
	m := Message{Type: t}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return Message{}, fmt.Errorf("encode %s message: %w", t, err)
		}
		m.Body = b
	}
	return m, nil
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
	b, err := json.Marshal(m)
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
	return c.Send(m, files...)
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
	var m Message
	if err := json.Unmarshal(c.buf[:n], &m); err != nil {
		closeAll(files)
		return Message{}, nil, fmt.Errorf("recv: decode: %w", err)
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
