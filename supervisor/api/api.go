// Package api serves the slirp4netns API socket (the man page's "API
// SOCKET"): a Unix stream socket taking one JSON request per connection,
// add_hostfwd, list_hostfwd and remove_hostfwd, with the C slirp4netns's
// replies and error texts.
//
// The server owns the forward table (ids, order, validation) and binds each
// forward's host socket itself; the engine only receives the bound socket's
// fd through a Backend, so a compromised engine never chooses what to bind.
//
// Use:
//
//	ln, err := api.Listen(cfg.APISocket) // 0600, stale file replaced
//	srv := api.NewServer(engine, api.Options{Plan: plan, EnableIPv6: cfg.EnableIPv6})
//	go srv.Serve(ln)
//	defer srv.Close() // closes ln (removing the file) and the host sockets
//
// Protocol, as in the C slirp4netns 1.2.0 unless noted: one request per
// connection, under MaxRequest bytes; the reply is compact JSON without a
// trailing newline, after which the server shuts down its side. Where we
// deliberately differ (each case is in the golden test table, which is
// checked against the C binary):
//   - a request is complete at the client's SHUT_WR or as soon as a whole
//     JSON value has arrived (the C reads once), and every connection has a
//     deadline; connections are served concurrently, up to a bound;
//   - list_hostfwd replies {"return":{"entries":[...]}} as the man page says
//     (the C binary omits "return");
//   - requests that crash the C (add_hostfwd without a string proto) get
//     "bad arguments.proto";
//   - ports must be integers 1-65535 and ids integers (the C wraps and
//     truncates), a non-string host_addr/guest_addr is rejected (the C
//     ignores it), and guest_addr must be a guest address of the guest
//     network (the C takes any address);
//   - host_addr may be IPv6 ("::" binds dual-stack; "0.0.0.0" stays IPv4
//     only), and with -6 guest_addr may be in fd00::/64; the default
//     guest_addr stays the IPv4 --configure address. See policy.ParseHostFwd.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// Backend is the engine side of a forward.
type Backend interface {
	// AddForward hands the engine a forward to serve. sock is the bound
	// listening TCP socket or bound UDP socket; the backend must not keep
	// or close it (it sends a copy); the server closes it on remove.
	AddForward(ctx context.Context, fwd proto.Forward, sock *os.File) error
	// RemoveForward tells the engine to stop serving forward id.
	RemoveForward(ctx context.Context, id int) error
}

// Defaults for Options.
const (
	// DefaultTimeout bounds each API connection: reading the request, and
	// separately the backend's handling of it.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxConns bounds concurrent API connections; further clients
	// wait in the listen backlog.
	DefaultMaxConns = 16
)

// writeTimeout bounds writing the reply to a client that does not read.
const writeTimeout = 5 * time.Second

// Options configure a Server.
type Options struct {
	Plan       policy.Plan // guest network: default guest_addr and the guest_addr rules
	EnableIPv6 bool        // -6: guest_addr may be in fd00::/64
	// Timeout bounds each connection's request read and, separately, its
	// backend call; 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxConns bounds concurrently served connections; 0 means
	// DefaultMaxConns.
	MaxConns int
	// Logf, when set, receives the reasons behind failed requests (the
	// client only sees the C version's terse error texts).
	Logf func(format string, args ...any)
}

// Server serves the API socket. Its methods are safe for concurrent use.
type Server struct {
	be     Backend
	opts   Options
	bind   bindFunc
	ctx    context.Context // cancelled by Close: aborts backend calls
	cancel context.CancelFunc
	sem    chan struct{} // one token per connection being served
	wg     sync.WaitGroup

	// opMu serialises add_hostfwd and remove_hostfwd; list_hostfwd only
	// needs mu, so it is never stuck behind a slow backend call.
	opMu sync.Mutex

	mu        sync.Mutex
	closed    bool
	lastID    int
	fwds      []*forward // in insertion order
	listeners map[*net.UnixListener]struct{}
	conns     map[net.Conn]struct{}
}

// forward is one row of the forward table.
type forward struct {
	id   int
	rule policy.HostFwd
	file *os.File // the supervisor's copy of the host socket
}

// NewServer returns a server that hands forwards to be.
func NewServer(be Backend, opts Options) *Server {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		be:        be,
		opts:      opts,
		bind:      bindHostSocket,
		ctx:       ctx,
		cancel:    cancel,
		sem:       make(chan struct{}, opts.MaxConns),
		listeners: make(map[*net.UnixListener]struct{}),
		conns:     make(map[net.Conn]struct{}),
	}
}

// Serve accepts API connections on ln, serving each in its own goroutine,
// until Close is called (it then returns nil, and ln is closed, which
// removes a socket file made by Listen) or accepting fails for good (it
// then returns the error and leaves ln open).
func (s *Server) Serve(ln *net.UnixListener) error {
	if !s.addListener(ln) {
		// Closed before Serve started: the listener is still ours to
		// close, which also removes the socket file.
		ln.Close()
		return nil
	}
	defer s.removeListener(ln)
	backoff := time.Duration(0)
	for {
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			return nil
		}
		conn, err := ln.Accept()
		if err != nil {
			<-s.sem
			if s.isClosed() {
				return nil
			}
			if !temporaryAcceptError(err) {
				return fmt.Errorf("accept on API socket: %w", err)
			}
			backoff = nextBackoff(backoff)
			s.logf("api: accept: %v; retrying in %v", err, backoff)
			if !s.sleep(backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		if !s.addConn(conn) {
			conn.Close()
			<-s.sem
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer s.removeConn(conn)
			s.serveConn(conn)
		}()
	}
}

// Close stops serving: it closes the listeners given to Serve (removing
// their socket files), aborts requests in progress, waits for them, and
// closes every forward's host socket. It does not ask the backend to remove
// forwards: the engine is shut down next. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close API socket: %w", err))
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()

	s.wg.Wait()

	s.mu.Lock()
	fwds := s.fwds
	s.fwds = nil
	s.mu.Unlock()
	for _, f := range fwds {
		closeQuietly(f.file)
	}
	return errors.Join(errs...)
}

// serveConn reads one request, answers it and closes the connection.
func (s *Server) serveConn(conn net.Conn) {
	defer conn.Close()
	// The deadline is what keeps a stuck client from holding its slot.
	_ = conn.SetReadDeadline(time.Now().Add(s.opts.Timeout))
	req, tooLarge, err := readRequest(conn)
	var resp []byte
	switch {
	case tooLarge:
		resp = errorResponse(descTooLarge)
	case err != nil && !isTimeout(err):
		return // the client went away; nobody to answer
	default:
		// On a timeout, answer what arrived (an empty or partial request
		// gets "cannot parse JSON"), so the client learns why.
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.Timeout)
		resp = s.handle(ctx, req)
		cancel()
	}
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := conn.Write(resp); err != nil {
		s.logf("api: write reply: %v", err)
		return
	}
	drain(conn)
}

// Bounds on draining a client's unread bytes after the reply.
const (
	drainTimeout = time.Second
	drainLimit   = 1 << 20
)

// drain ends our side and discards what the client sent beyond the request
// (a trailing newline, the rest of an oversized request) until it closes:
// closing a Unix socket with unread data makes the client's next read fail
// with ECONNRESET instead of EOF, which breaks clients that read the reply
// with io.ReadAll.
func drain(conn net.Conn) {
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite() // the client's read of the reply ends with EOF
	}
	_ = conn.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, drainLimit))
}

func (s *Server) addListener(ln *net.UnixListener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) removeListener(ln *net.UnixListener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed { // Close needs the set to close them
		delete(s.listeners, ln)
	}
}

// addConn registers a connection and its goroutine, unless closed; doing
// both under mu keeps wg.Add from racing with Close's wg.Wait.
func (s *Server) addConn(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) removeConn(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// sleep waits d, or until Close; it reports whether the server is still open.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// temporaryAcceptError reports accept errors that pass with time (resource
// exhaustion, a client that gave up), which must not stop the server.
func temporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS,
		syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func nextBackoff(d time.Duration) time.Duration {
	const minBackoff, maxBackoff = 5 * time.Millisecond, time.Second
	if d < minBackoff {
		return minBackoff
	}
	return min(2*d, maxBackoff)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
