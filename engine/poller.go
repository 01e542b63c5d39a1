package engine

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Scheduler sizes. The workers run connections woken by gVisor (whose
// notifiers must not do the work themselves); the poller goroutine runs
// connections woken by their host socket itself, saving a handoff.
const (
	minRelayWorkers = 2
	pollEventBatch  = 128
)

// Scheduling states of a relayed connection (relayConn.sched).
const (
	schedIdle   int32 = iota // waiting for an event
	schedQueued              // queued or running
	schedAgain               // running, and an event came in meanwhile
)

// relaySched owns the epoll instance that watches the host sockets of
// relayed TCP connections, the run queue and the goroutines that run ready
// connections. No goroutine and no buffer belongs to an idle connection:
// the connection is a struct in conns, its host socket in the epoll set and
// a function entry in its gVisor endpoint's waiter queue.
//
// The poller never blocks in epoll_wait: the epoll fd itself waits in Go's
// poller (it is readable while events are pending), and epoll_wait runs with
// a zero timeout. A goroutine blocked in a system call has its P taken away
// by sysmon each time (a thread handoff per wake-up); in a first version
// that blocked, sysmon was 16 % of the engine's samples in netbench's
// connection test. epoll_wait and epoll_ctl are raw system calls
// (rawsys.go), for the same reason.
type relaySched struct {
	e  *Engine
	ep *os.File        // the epoll fd, in Go's poller; Close ends the poller
	rc syscall.RawConn // of ep

	mu     sync.Mutex
	cond   sync.Cond
	queue  []*relayConn // run queue: queue[head:]
	head   int
	closed bool
	conns  map[uint64]polledConn
	nextID uint64
	wg     sync.WaitGroup // poller and workers

	// pollOnce's events, result and epoll_wait call (the link's reader
	// alone uses them; built once, so that a poll allocates nothing).
	onceEvents []unix.EpollEvent
	onceN      int
	onceFn     func(epfd uintptr)
}

// newRelaySched creates the epoll instance and starts the poller and the
// workers; they count in e.wg and end with Close.
func newRelaySched(e *Engine) (*relaySched, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: epoll fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("relay: epoll fd: %w", err)
	}
	s := &relaySched{e: e, ep: f, rc: rc, conns: make(map[uint64]polledConn)}
	s.cond.L = &s.mu
	s.onceEvents = make([]unix.EpollEvent, pollEventBatch)
	s.onceFn = func(epfd uintptr) { s.onceN, _ = rawEpollPoll(int(epfd), s.onceEvents) }
	workers := max(minRelayWorkers, runtime.GOMAXPROCS(0))
	s.wg.Add(1 + workers)
	e.wg.Add(1 + workers)
	go s.poll()
	for range workers {
		go s.work()
	}
	return s, nil
}

// polledConn is a connection whose host socket the poller watches: a relayed
// one (relayConn) or one of the TCP fast path (fastConn).
type polledConn interface {
	// pollFD is the host socket.
	pollFD() int
	// pollKey is the key add gave it (in conns and the epoll user data).
	pollKey() uint64
	setPollKey(uint64)
	// hostEvent handles epoll events of the host socket; it runs on the
	// poller goroutine.
	hostEvent(events uint32)
	// abort resets the connection (the scheduler is closing).
	abort()
}

// add registers c and its host socket; it returns false once the scheduler
// is closed (c is then left to the caller).
func (s *relaySched) add(c polledConn) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.nextID++
	c.setPollKey(s.nextID)
	s.conns[s.nextID] = c
	s.mu.Unlock()
	if err := s.ctl(unix.EPOLL_CTL_ADD, c, false); err != nil {
		s.remove(c)
		return false
	}
	return true
}

// remove forgets c (its socket leaves the epoll set when it is closed).
func (s *relaySched) remove(c polledConn) {
	s.mu.Lock()
	delete(s.conns, c.pollKey())
	s.mu.Unlock()
}

// ctl adds or modifies c's host socket in the epoll set, edge-triggered;
// out asks for EPOLLOUT too (only while a write to the host is pending, so
// that a writable socket does not wake the poller for nothing).
func (s *relaySched) ctl(op int, c polledConn, out bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLPRI | unix.EPOLLET}
	if out {
		ev.Events |= unix.EPOLLOUT
	}
	putConnID(&ev, c.pollKey())
	// Through Control, so that the epoll fd cannot be closed (and its
	// number reused) under the call.
	var err error
	if cerr := s.rc.Control(func(epfd uintptr) {
		err = rawEpollCtl(int(epfd), op, c.pollFD(), &ev)
	}); cerr != nil {
		return fmt.Errorf("relay: epoll_ctl: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	return nil
}

// setOut adds (on) or removes EPOLLOUT for c's host socket, unless
// *armed, c's record of it, says it is so already.
func (s *relaySched) setOut(c polledConn, armed *bool, on bool) error {
	if *armed == on {
		return nil
	}
	if err := s.ctl(unix.EPOLL_CTL_MOD, c, on); err != nil {
		return err
	}
	*armed = on
	return nil
}

// putConnID stores id in the event's 64-bit user data.
func putConnID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func connIDOf(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// schedule queues c to run on a worker unless it is queued or running
// already (then it runs once more). Safe from gVisor notifiers: it never
// blocks and does no I/O.
func (s *relaySched) schedule(c *relayConn) {
	if c.claim() {
		s.enqueue(c)
	}
}

// enqueue appends a claimed connection to the run queue.
func (s *relaySched) enqueue(c *relayConn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	s.cond.Signal()
}

// runClaimed runs a claimed connection until no event is left for it; a
// connection that used its budget goes to the back of the run queue.
func (s *relaySched) runClaimed(c *relayConn) {
	for {
		if c.run() {
			s.enqueue(c) // still claimed: yield to others
			return
		}
		if c.release() {
			return
		}
	}
}

// runNow runs c on the calling goroutine if nobody else runs it.
func (s *relaySched) runNow(c *relayConn) {
	if c.claim() {
		s.runClaimed(c)
	}
}

// work runs queued connections until the scheduler closes.
func (s *relaySched) work() {
	defer s.e.wg.Done()
	defer s.wg.Done()
	for {
		s.mu.Lock()
		for s.head == len(s.queue) && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		c := s.queue[s.head]
		s.queue[s.head] = nil
		s.head++
		if s.head == len(s.queue) {
			s.queue, s.head = s.queue[:0], 0
		}
		s.mu.Unlock()
		s.runClaimed(c)
	}
}

// poll waits for host socket events and runs the ready connections itself.
//
// It runs them inside one long RawConn.Read: each Read starts by clearing
// the epoll fd's readiness in Go's poller, so a fresh Read would need an
// epoll_wait to learn that nothing came in meanwhile. Within one Read, an
// event that arrives after a harvest marks the epoll fd readable again
// (the kernel wakes the parent epoll on every event), so once a harvest
// came back short the poller can park without asking again: one
// epoll_wait per wake-up instead of two.
func (s *relaySched) poll() {
	defer s.e.wg.Done()
	defer s.wg.Done()
	events := make([]unix.EpollEvent, pollEventBatch)
	var werr error
	wait := func(epfd uintptr) bool {
		for {
			n, err := rawEpollPoll(int(epfd), events)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				werr = err
				return true
			case n == 0:
				return false
			}
			s.dispatch(events[:n])
			if n < len(events) {
				return false
			}
		}
	}
	err := s.rc.Read(wait)
	switch {
	case werr != nil:
		s.e.logf("relay: epoll_wait: %v", werr)
	case err != nil && !s.isClosed():
		s.e.logf("relay: wait for epoll: %v", err)
	}
}

// pollOnce runs the connections whose host sockets have events, without
// waiting, and reports whether there were any. It serves the link's reader
// while that busy-polls (guard.BusyPoll); the poller goroutine, woken by
// the same events, then finds nothing and parks again.
func (s *relaySched) pollOnce() bool {
	s.onceN = 0
	// Through Control, as ctl: the epoll fd stays open during the call.
	if s.rc.Control(s.onceFn) != nil || s.onceN <= 0 {
		return false
	}
	s.dispatch(s.onceEvents[:s.onceN])
	return true
}

// hostDrainEvents are the epoll events after which a short read from the
// host socket does not prove it empty (see relayConn.hostDrain).
const hostDrainEvents = unix.EPOLLRDHUP | unix.EPOLLPRI | unix.EPOLLHUP | unix.EPOLLERR

// dispatch runs the connections of a batch of epoll events.
func (s *relaySched) dispatch(events []unix.EpollEvent) {
	for i := range events {
		s.mu.Lock()
		c := s.conns[connIDOf(&events[i])]
		s.mu.Unlock()
		if c != nil {
			c.hostEvent(events[i].Events)
		}
	}
}

// hostEvent implements polledConn: it records what the events say and runs
// the connection on the poller goroutine (unless it runs elsewhere).
func (c *relayConn) hostEvent(events uint32) {
	if events&unix.EPOLLERR != 0 {
		c.hostError.Store(true)
	}
	if events&hostDrainEvents != 0 && !c.hostDrain.Load() {
		c.hostDrain.Store(true)
	}
	if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.hostWritable.Store(true)
	}
	c.hostReady.Store(true)
	c.s.runNow(c)
}

func (c *relayConn) pollFD() int           { return c.fd }
func (c *relayConn) pollKey() uint64       { return c.id }
func (c *relayConn) setPollKey(key uint64) { c.id = key }

// count is the number of connections being relayed.
func (s *relaySched) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *relaySched) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the poller and the workers, then aborts every connection
// left. It is called once, through the engine's connection set.
func (s *relaySched) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.queue, s.head = nil, 0
	s.mu.Unlock()
	s.cond.Broadcast()
	s.ep.Close() // wakes the poller; the fd closes once it has returned
	s.wg.Wait()
	s.mu.Lock()
	left := make([]polledConn, 0, len(s.conns))
	for _, c := range s.conns {
		left = append(left, c)
	}
	s.mu.Unlock()
	for _, c := range left {
		c.abort()
	}
	return nil
}
