package engine

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// copyBufSize is the buffer of one host read. 256 KiB, not io.Copy's 32
// KiB: fewer, larger writes into gVisor's send buffer measured a few percent
// more throughput and less CPU per byte. Only the pages a read touches
// become resident, and a connection holds a buffer only while the guest
// does not take what was read.
const copyBufSize = 256 << 10

// hostReadBudget bounds what one run of a connection reads from its host
// socket before it yields to other connections.
const hostReadBudget = 1 << 20

// copyBufs recycles host read buffers between connections.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// guestEvents are the endpoint events that may let a connection progress.
const guestEvents = waiter.ReadableEvents | waiter.WritableEvents | waiter.EventHUp | waiter.EventErr

// errGathered stops a gVisor Read at the end of what is wanted.
var errGathered = errors.New("gathered enough")

// relayConn relays one TCP connection between a gVisor endpoint (the
// guest side) and a non-blocking host socket, driven by events: gVisor's
// notifier and the scheduler's epoll only schedule it, and whoever claims
// it runs it until it would block on both sides. Guest data is written to
// the host socket straight from gVisor's buffers; host data goes through a
// pooled buffer that the connection keeps only while the guest's send
// buffer is full.
type relayConn struct {
	s     *relaySched
	set   *connSet // the connection set it counts in (engine or forward)
	id    uint64   // key in s.conns and in the epoll user data
	ep    tcpip.Endpoint
	wq    *waiter.Queue
	entry waiter.Entry
	fd    int // host socket

	sched     atomic.Int32 // schedIdle, schedQueued, schedAgain
	hostError atomic.Bool  // the poller saw EPOLLERR
	// hostReady: the host socket may have data (or EOF) to read. The poller
	// sets it on every event; a run clears it before reading until EAGAIN,
	// so that runs woken by gVisor skip a read that would fail.
	hostReady atomic.Bool
	// hostDrain: the poller saw an event (EOF, urgent data, an error)
	// after which the relay reads the host socket until EAGAIN or EOF.
	// Until then a short read proves the socket empty: a stream socket
	// returns less than asked only when its queue ran dry (or at an
	// urgent mark, which comes with EPOLLPRI), and data that arrives later
	// is a new edge-triggered event. That saves a read that would fail
	// with EAGAIN after every message.
	hostDrain atomic.Bool
	// guestPending: gVisor signalled an event on the endpoint since the
	// last run began; hostWritable: the poller saw EPOLLOUT. A run looks
	// at the guest side only after one of them (or when the last run ran
	// out of budget there), so that a run woken by host data goes
	// straight to it.
	guestPending atomic.Bool
	hostWritable atomic.Bool

	mu        sync.Mutex   // held by whoever runs the connection; guards the rest
	done      bool         // both sides closed
	inSet     bool         // counted in set (finish removes it)
	guestEOF  bool         // the guest's FIN was passed on (host write side shut down)
	hostEOF   bool         // the host's FIN was passed on (guest write side shut down)
	outArmed  bool         // EPOLLOUT is in the epoll set
	guestMore bool         // guestToHost stopped at its budget
	buf       *[]byte      // host data the guest has not taken yet
	off, end  int          // its unsent part
	rd        bytes.Reader // payloader over buf[off:end]
	g         gather       // guest data being written to the host
	consume   discard      // consumes what the host took
}

// start relays between ep (whose waiter queue is wq) and the host socket
// fd, counting the connection in set. It owns ep and fd from then on.
func (s *relaySched) start(ep tcpip.Endpoint, wq *waiter.Queue, fd int, set *connSet) {
	// hostReady starts false: data already queued on the socket shows as
	// an event when the socket joins the epoll set.
	c := &relayConn{s: s, set: set, ep: ep, wq: wq, fd: fd}
	c.guestPending.Store(true) // whatever arrived before the registration
	c.entry = waiter.NewFunctionEntry(guestEvents, func(waiter.EventMask) {
		c.guestPending.Store(true)
		s.schedule(c)
	})
	c.mu.Lock()
	wq.EventRegister(&c.entry)
	ok := s.add(c)
	c.mu.Unlock()
	if !ok {
		c.Close()
		return
	}
	// connSet.add closes c itself, under its lock, when the set is closed:
	// finish must then not call back into the set (inSet is false).
	if !set.add(c) {
		return
	}
	c.mu.Lock()
	done := c.done
	c.inSet = !done
	c.mu.Unlock()
	if done {
		set.remove(c) // it ended before it was counted
		return
	}
	// Whatever arrived before the registrations.
	s.runNow(c)
}

// claim marks c queued-or-running; it returns false if it already was
// (then it runs once more when the current run ends).
func (c *relayConn) claim() bool {
	for {
		switch st := c.sched.Load(); st {
		case schedIdle:
			if c.sched.CompareAndSwap(schedIdle, schedQueued) {
				return true
			}
		case schedQueued:
			if c.sched.CompareAndSwap(schedQueued, schedAgain) {
				return false
			}
		default:
			return false
		}
	}
}

// release ends a run: true if c is idle now, false if an event came in
// during the run (c stays claimed and runs again).
func (c *relayConn) release() bool {
	if c.sched.CompareAndSwap(schedQueued, schedIdle) {
		return true
	}
	c.sched.Store(schedQueued)
	return false
}

// run moves what can be moved in both directions without blocking. It
// returns true when it stopped early to let other connections run.
func (c *relayConn) run() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	var more bool
	var err error
	// Both flags are cleared before the guest is looked at: an event that
	// comes in during the run sets them again and runs c once more.
	guest := c.guestPending.Swap(false)
	if c.hostWritable.Swap(false) || c.guestMore {
		guest = true
	}
	if guest {
		more, err = c.guestToHost()
		c.guestMore = more
	}
	if err == nil {
		var more2 bool
		more2, err = c.hostToGuest()
		more = more || more2
	}
	if err == nil {
		err = c.checkPeers()
	}
	switch {
	case err != nil:
		c.finish(true)
		return false
	case c.guestEOF && c.hostEOF && c.buf == nil:
		c.finish(false)
		return false
	}
	return more
}

// guestToHost writes what the guest sent to the host socket, straight from
// gVisor's buffers (peeked, written with one writev, then consumed as far
// as the host took it), and passes the guest's FIN on.
func (c *relayConn) guestToHost() (more bool, err error) {
	for moved := 0; !c.guestEOF && moved < guestReadBudget; {
		_, terr := c.ep.Read(&c.g, tcpip.ReadOptions{Peek: true})
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			return false, c.armOut(false)
		case *tcpip.ErrClosedForReceive:
			c.guestEOF = true
			if err := rawShutdownWrite(c.fd); err != nil {
				return false, fmt.Errorf("shutdown host write side: %w", err)
			}
			return false, c.armOut(false)
		default:
			c.g.reset()
			return false, fmt.Errorf("guest read: %s", terr)
		}
		n, werr := c.g.writeTo(c.fd)
		c.g.reset()
		if n > 0 {
			c.consume.left = n
			if _, terr := c.ep.Read(&c.consume, tcpip.ReadOptions{}); terr != nil {
				return false, fmt.Errorf("guest read: %s", terr)
			}
			moved += n
		}
		switch {
		case werr == unix.EAGAIN:
			return false, c.armOut(true)
		case werr != nil:
			return false, fmt.Errorf("host write: %w", werr)
		}
		// Loop even when everything queued went out: a FIN that came with
		// the data shows only on the next read.
	}
	return !c.guestEOF, nil
}

// hostToGuest writes the pending host data into the guest endpoint, then
// reads more from the host socket while the guest takes it, and passes
// the host's FIN on. more reports that the read budget ran out.
func (c *relayConn) hostToGuest() (more bool, err error) {
	if c.buf != nil {
		if blocked, err := c.flushToGuest(); blocked || err != nil {
			return false, err
		}
	}
	if c.hostEOF || !c.hostReady.Swap(false) {
		return false, nil
	}
	// From here until a read says EAGAIN or EOF, the socket may hold data:
	// hostReady goes back up on every other way out.
	for moved := 0; ; {
		if moved >= hostReadBudget {
			c.hostReady.Store(true)
			return true, nil
		}
		n, err := c.readHost()
		if n <= 0 || err != nil {
			return false, err
		}
		moved += n
		if blocked, err := c.flushToGuest(); blocked || err != nil {
			c.hostReady.Store(true)
			return false, err
		}
		if n < copyBufSize && !c.hostDrain.Load() {
			return false, nil // a short read: the socket is empty
		}
	}
}

// flushToGuest writes buf[off:end] into the guest endpoint; blocked
// reports that the endpoint's send buffer is full (gVisor signals
// writability when it has room again).
func (c *relayConn) flushToGuest() (blocked bool, err error) {
	c.rd.Reset((*c.buf)[c.off:c.end])
	n, terr := c.ep.Write(&c.rd, tcpip.WriteOptions{})
	c.off += int(n)
	c.rd.Reset(nil)
	if terr != nil {
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			return true, nil
		}
		return false, fmt.Errorf("guest write: %s", terr)
	}
	if c.off < c.end {
		return true, nil
	}
	c.putBuf()
	return false, nil
}

// readHost reads once from the host socket into a pooled buffer; on EOF it
// shuts the guest's write side. n is 0 when nothing was read.
func (c *relayConn) readHost() (n int, err error) {
	bp := copyBufs.Get().(*[]byte)
	n, err = rawRead(c.fd, *bp)
	switch {
	case err == unix.EAGAIN:
		copyBufs.Put(bp)
		return 0, nil
	case err != nil:
		copyBufs.Put(bp)
		return 0, fmt.Errorf("host read: %w", err)
	case n == 0:
		copyBufs.Put(bp)
		c.hostEOF = true
		if terr := c.ep.Shutdown(tcpip.ShutdownWrite); terr != nil {
			return 0, fmt.Errorf("shutdown guest write side: %s", terr)
		}
		return 0, nil
	}
	c.buf, c.off, c.end = bp, 0, n
	return n, nil
}

// checkPeers notices a reset on a side the relay no longer reads from: the
// guest's after its FIN, the host's (EPOLLERR) at any time.
func (c *relayConn) checkPeers() error {
	if c.hostError.Load() {
		errno, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && errno != 0 {
			return fmt.Errorf("host socket: %w", unix.Errno(errno))
		}
		c.hostError.Store(false)
	}
	if c.guestEOF && tcp.EndpointState(c.ep.State()) == tcp.StateError {
		return errors.New("guest connection reset")
	}
	return nil
}

// armOut adds (on) or removes EPOLLOUT for the host socket.
func (c *relayConn) armOut(on bool) error { return c.s.setOut(c, &c.outArmed, on) }

func (c *relayConn) putBuf() {
	if c.buf != nil {
		copyBufs.Put(c.buf)
		c.buf = nil
	}
}

// finish closes both sides: gracefully after both FINs went through, with
// a reset on each side (SO_LINGER 0 on the host socket) after an error.
func (c *relayConn) finish(abort bool) {
	c.done = true
	c.wq.EventUnregister(&c.entry)
	c.s.remove(c)
	if abort {
		c.ep.Abort()
		resetFD(c.fd)
	} else {
		c.ep.Close()
		rawClose(c.fd) // also takes it out of the epoll set
	}
	c.putBuf()
	if c.inSet {
		c.set.remove(c)
	}
}

// resetFD closes a host socket with a reset (SO_LINGER 0).
func resetFD(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	rawClose(fd)
}

// Close aborts the connection (engine Close, forward removal).
func (c *relayConn) Close() error {
	c.abort()
	return nil
}

// abort resets both sides now unless the connection is closed already.
func (c *relayConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.finish(true)
	}
}

// Limits of one gathered write to the host: iovecs and bytes; writes up to
// rawWriteMax bytes are raw system calls (see rawRead).
const (
	gatherIovecs = 64
	gatherBytes  = 1 << 20
	rawWriteMax  = 16 << 10
)

// guestReadBudget bounds what one run moves from the guest to the host
// before it yields to other connections.
const guestReadBudget = 4 << 20

// gather collects gVisor's views (from a peeking Read) as iovecs for one
// writev; the views stay queued in the endpoint until consumed.
type gather struct {
	iov []unix.Iovec
	n   int
}

func (g *gather) reset() {
	clear(g.iov) // drop the references to gVisor's buffers
	g.iov, g.n = g.iov[:0], 0
}

func (g *gather) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(g.iov) == gatherIovecs || g.n >= gatherBytes {
		return 0, errGathered
	}
	v := unix.Iovec{Base: &p[0]}
	v.SetLen(len(p))
	g.iov = append(g.iov, v)
	g.n += len(p)
	return len(p), nil
}

// writeTo writes the gathered views to fd, retrying on EINTR; n is what
// the socket took.
func (g *gather) writeTo(fd int) (n int, err error) {
	if len(g.iov) == 0 {
		return 0, nil
	}
	return writeCall(unix.SYS_WRITEV, fd, unsafe.Pointer(&g.iov[0]), len(g.iov), g.n)
}

// discard consumes left bytes of an endpoint's receive queue (the part a
// gathered write sent).
type discard struct{ left int }

func (d *discard) Write(p []byte) (int, error) {
	if len(p) <= d.left {
		d.left -= len(p)
		return len(p), nil
	}
	n := d.left
	d.left = 0
	return n, errGathered
}

// rawSocket is a Go socket whose descriptor can be reached
// (*net.TCPConn).
type rawSocket interface {
	SyscallConn() (syscall.RawConn, error)
	Close() error
}

// detachFD takes the socket out of c: a duplicate of its descriptor, which
// the relay's epoll watches instead of Go's poller, and c closed. The
// duplicate shares the file description, which Go made non-blocking.
func detachFD(c rawSocket) (int, error) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("detach socket: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("detach socket: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("detach socket: dup: %w", derr)
	}
	return fd, nil
}
