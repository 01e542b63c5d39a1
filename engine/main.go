package engine

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/internal/stackgrow"
	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/sandbox"
)

// ipcFD is the engine's end of the ipc socketpair (docs/architecture.md).
const ipcFD = 3

// closeTimeout bounds the orderly shutdown; the process exits after it
// anyway, which closes whatever is left.
const closeTimeout = 2 * time.Second

// Main is the engine process's entry point: it receives the configuration
// and the link fd on fd 3, runs the engine and serves the supervisor's
// requests until told to stop (exit 0), the supervisor goes away (exit 0)
// or the link or a service fails (exit 1). It never writes to stdout.
func Main() int {
	// The start-up's call chains (gVisor's stack, the services) take
	// this goroutine to 32 KiB: grow there in one shallow copy.
	stackgrow.To32K()
	logger := log.New(os.Stderr, "slirp4netns engine: ", 0)
	tuneRuntime()
	// Die with the supervisor even if it is SIGKILLed before it can tell us.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		logger.Printf("prctl(PR_SET_PDEATHSIG): %v", err)
	}
	conn, err := ipc.FromFD(ipcFD)
	if err != nil {
		logger.Print(err)
		return 1
	}
	defer conn.Close()
	s := &server{conn: conn, log: logger}
	return s.run()
}

// server is the engine process's side of the ipc protocol.
type server struct {
	conn *ipc.Conn
	log  *log.Logger
	eng  *Engine
}

// ipcMsg is one received message, or the receive error.
type ipcMsg struct {
	m     ipc.Message
	files []*os.File
	err   error
}

func (s *server) run() int {
	start, linkFile, err := s.recvStart()
	if err != nil {
		return s.fail(err)
	}
	linkDone := make(chan error, 1)
	ep, err := newLinkEndpoint(linkFile, start, s.log, func(err error) {
		if err != nil {
			select {
			case linkDone <- err:
			default:
			}
		}
	})
	linkFile.Close()
	if err != nil {
		return s.fail(err)
	}
	opts := []Option{WithLogger(s.log), WithLinkHeld()}
	if os.Getenv(TCPFastPathEnv) == "0" {
		opts = append(opts, WithoutTCPFastPath())
	}
	eng, err := New(start.Config, ep, opts...)
	if err != nil {
		ep.Close()
		return s.fail(err)
	}
	s.eng = eng
	if b, ok := ep.(*bessLink); ok {
		b.SetOnConnect(func() { clearNeighbors(eng.Stack(), eng.NIC()) })
	}
	// Confine only now: the link, the stack, the resolved --outbound-addr
	// and the services' sockets exist, and nothing later needs what the
	// sandbox or the seccomp filter forbids.
	if err := sandbox.Confine(start.Config.EnableSandbox, start.Config.EnableSeccomp); err != nil {
		code := s.fail(fmt.Errorf("confine engine: %w", err))
		s.close()
		return code
	}
	if sandbox.SelfTestRequested() {
		// Hidden test hook (not a user flag): prove from inside the
		// confined engine that what it must not do fails; the lines go to
		// stderr and the engine then runs as usual.
		if err := sandbox.SelfTest(os.Stderr); err != nil {
			s.log.Print(err)
		}
	}
	// Confined: now the guest's frames (waiting in the TAP's queue since
	// the supervisor wrote --ready-fd) may be served.
	eng.ReleaseLink()
	if err := s.conn.SendBody(ipc.TypeReady, 0, nil); err != nil {
		s.log.Print(err)
		s.close()
		return 1
	}
	trimDone := make(chan struct{})
	defer close(trimDone)
	go trimWhenIdle(trimDone)
	msgs := make(chan ipcMsg)
	go s.recvLoop(msgs)
	for {
		select {
		case im := <-msgs:
			if im.err != nil {
				s.close()
				if errors.Is(im.err, io.EOF) {
					return 0
				}
				s.log.Print(im.err)
				return 1
			}
			if done := s.handle(im.m, im.files); done {
				s.close()
				return 0
			}
		case err := <-linkDone:
			code := s.fail(fmt.Errorf("link closed: %w", err))
			s.close()
			return code
		case err := <-eng.ServiceErrors():
			code := s.fail(err)
			s.close()
			return code
		}
	}
}

// recvStart waits for the engine-start message and its link fd.
func (s *server) recvStart() (proto.EngineStart, *os.File, error) {
	var start proto.EngineStart
	m, files, err := s.conn.Recv()
	if err != nil {
		return start, nil, fmt.Errorf("waiting for configuration: %w", err)
	}
	if m.Type != ipc.TypeEngineStart || len(files) != 1 {
		closeFiles(files)
		return start, nil, fmt.Errorf("expected %s with 1 fd, got %q with %d", ipc.TypeEngineStart, m.Type, len(files))
	}
	if err := m.Decode(&start); err != nil {
		closeFiles(files)
		return start, nil, err
	}
	return start, files[0], nil
}

// recvLoop forwards ipc messages to run until the connection fails.
func (s *server) recvLoop(out chan<- ipcMsg) {
	stackgrow.To4K()
	for {
		m, files, err := s.conn.Recv()
		out <- ipcMsg{m: m, files: files, err: err}
		if err != nil {
			return
		}
	}
}

// handle serves one request; it returns true on shutdown.
func (s *server) handle(m ipc.Message, files []*os.File) bool {
	defer closeFiles(files)
	var err error
	switch m.Type {
	case ipc.TypeShutdown:
		return true
	case ipc.TypeAddForward:
		err = s.addForward(m, files)
	case ipc.TypeRemoveForward:
		var fwd proto.Forward
		if err = m.Decode(&fwd); err == nil {
			err = s.eng.RemoveForward(fwd.ID)
		}
	default:
		err = fmt.Errorf("unknown request %q", m.Type)
	}
	reply := ipc.Message{Type: ipc.TypeReply, Seq: m.Seq}
	if err != nil {
		reply.Error = err.Error()
	}
	if serr := s.conn.Send(reply); serr != nil {
		s.log.Print(serr)
	}
	return false
}

func (s *server) addForward(m ipc.Message, files []*os.File) error {
	var fwd proto.Forward
	if err := m.Decode(&fwd); err != nil {
		return err
	}
	if len(files) != 1 {
		return fmt.Errorf("forward %d: expected 1 fd, got %d", fwd.ID, len(files))
	}
	return s.eng.AddForward(fwd, files[0])
}

// fail reports a fatal error to stderr and to the supervisor.
func (s *server) fail(err error) int {
	s.log.Print(err)
	if serr := s.conn.Send(ipc.Message{Type: ipc.TypeError, Error: err.Error()}); serr != nil {
		s.log.Print(serr)
	}
	return 1
}

// close shuts the engine down, giving up after closeTimeout (the process is
// about to exit, which releases everything anyway).
func (s *server) close() {
	if s.eng == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		s.eng.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		s.log.Print("shutdown timed out")
	}
}

// BusyPollEnv in slirp4netns's environment sets the link reader's busy-poll
// window in microseconds (link.Options.BusyPoll); "0" turns busy polling
// off, for a machine where a spare core's idle time matters more than
// round-trip latency.
const BusyPollEnv = "SLIRP4NETNS_GO_BUSY_POLL_US"

// maxBusyPoll bounds BusyPollEnv: longer windows only burn more CPU.
const maxBusyPoll = 10 * time.Millisecond

// busyPollFromEnv is the busy-poll window BusyPollEnv's value v asks for:
// link.DefaultBusyPoll when v is empty, and when it is not a number of
// microseconds from 0 to maxBusyPoll (with a warning).
func busyPollFromEnv(v string, logger *log.Logger) time.Duration {
	if v == "" {
		return link.DefaultBusyPoll
	}
	us, err := strconv.ParseUint(v, 10, 32)
	if err != nil || time.Duration(us)*time.Microsecond > maxBusyPoll {
		logger.Printf("WARNING: ignoring %s=%q: want microseconds from 0 to %d", BusyPollEnv, v, maxBusyPoll.Microseconds())
		return link.DefaultBusyPoll
	}
	return time.Duration(us) * time.Microsecond
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// newLinkEndpoint makes the link endpoint on the link fd (a TAP, with or
// without the virtio-net header, a listening BESS SOCK_SEQPACKET socket, or
// one connected BESS connection). The endpoint gets its own duplicate of
// f's descriptor; onClosed is called with a non-nil error when the link ends
// (peer gone, fd error; for a BESS listener, only when accepting fails for
// good: a client that leaves is replaced by the next one, see bess.go).
func newLinkEndpoint(f *os.File, start proto.EngineStart, logger *log.Logger, onClosed func(error)) (stack.LinkEndpoint, error) {
	opts := link.Options{
		MTU:      uint32(start.Config.MTU),
		Address:  GatewayMAC,
		OnClosed: onClosed,
		BusyPoll: busyPollFromEnv(os.Getenv(BusyPollEnv), logger),
	}
	if start.Link == proto.LinkBESS {
		listening, err := isListening(int(f.Fd()))
		if err != nil {
			return nil, err
		}
		if listening {
			return newBESSLink(f, opts, logger, onClosed)
		}
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup link fd: %w", err)
	}
	if start.Link == proto.LinkTap {
		opts.VnetHdr = start.Tap.VnetHdr
		opts.Offloads = start.Tap.Offloads
	}
	ep, err := link.New(fd, opts)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link endpoint: %w", err)
	}
	return ep, nil
}
