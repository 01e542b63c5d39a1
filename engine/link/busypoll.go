package link

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// BusyPoller is a FrameTaker with event sources of its own (the host
// sockets of its connections) that the reader polls, with the link, while
// it busy-polls (Options.BusyPoll).
type BusyPoller interface {
	// WantBusyPoll reports whether the frames taken since it was last
	// asked make a window worthwhile; the reader asks after FlushFrames.
	WantBusyPoll() bool
	// BusyPoll handles what the taker's sources have ready, without
	// blocking, on the reader goroutine, and reports whether there was
	// anything.
	BusyPoll() bool
}

// DefaultBusyPoll is the busy-poll window the engine uses unless told
// otherwise. On the 2-CPU VMs this project is measured on, a thread that
// goes to sleep costs ~30 us to wake (idle vCPU, wake-up IPI), and a 1-byte
// request to a loopback server is answered 20-50 us after our write:
// polling 100 us catches the answer and the guest's next request without a
// sleep. Measured (scripts/netab rr, interleaved, docs/benchmarks.md):
// p50 118 -> 65 us against C's 97, and 165 -> 80 against 150 at another
// load, engine CPU per round trip +10-15 %; windows of 20 us caught nothing
// (more CPU, same p50), 50 us about half, 200 us no more than 100.
const DefaultBusyPoll = 100 * time.Microsecond

// Bounds of busy polling: after busyPollMisses windows in a row that
// caught nothing the reader sleeps right away for busyPollBackoff (an
// interactive session pays a window per keystroke at most twice per
// backoff); a run of windows that keep catching ends after busyPollMaxRun,
// so that the reader parks in Go's poller once in a while (that is when the
// runtime looks at the engine's other fds: the API socket, DNS, gVisor's).
const (
	busyPollMisses  = 2
	busyPollBackoff = 10 * time.Millisecond
	busyPollMaxRun  = time.Millisecond
	// busyPollYield is how many polls the reader does between yields to
	// other goroutines (their timers and the work it readied).
	busyPollYield = 16
)

// busyPoll is the reader's busy-poll state; times are since base.
type busyPoll struct {
	base     time.Time
	window   time.Duration // 0: off
	misses   int           // windows in a row that caught nothing
	offUntil time.Duration // no polling before this
	running  bool          // a window was opened since the reader last parked
	runStart time.Duration // when the first of them opened
}

// now is the monotonic time since base (read through the vDSO).
func (b *busyPoll) now() time.Duration { return time.Since(b.base) }

// allow reports whether the reader may open a window at now.
func (b *busyPoll) allow(now time.Duration) bool {
	switch {
	case b.window <= 0, now < b.offUntil:
		return false
	case !b.running:
		b.running, b.runStart = true, now
		return true
	default:
		return now-b.runStart < busyPollMaxRun
	}
}

// done records the end of a window at now: whether it caught anything.
func (b *busyPoll) done(caught bool, now time.Duration) {
	if caught {
		b.misses = 0
		return
	}
	b.misses++
	if b.misses >= busyPollMisses {
		b.misses = 0
		b.offUntil = now + busyPollBackoff
	}
}

// parked records that the reader waits in Go's poller.
func (b *busyPoll) parked() { b.running = false }

// spin busy-polls the link (fd) and p for up to one window, extended by
// each event p handled; it returns true when a frame was read (r.n and
// r.errno hold the result, as after readv).
func (r *rxState) spin(fd uintptr, p BusyPoller) bool {
	now := r.bp.now()
	if !r.bp.allow(now) {
		return false
	}
	end := now + r.bp.window
	caught := false
	for i := 1; ; i++ {
		if p.BusyPoll() {
			caught = true
			end = r.bp.now() + r.bp.window
		}
		if n, errno := r.readOnce(fd); errno != unix.EAGAIN && errno != unix.EINTR {
			r.n, r.errno = n, errno
			r.bp.done(true, r.bp.now())
			return true
		}
		now = r.bp.now()
		if now >= end {
			r.bp.done(caught, now)
			return false
		}
		if i%busyPollYield == 0 {
			runtime.Gosched()
		}
	}
}
