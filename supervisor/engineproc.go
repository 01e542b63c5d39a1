package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
	"github.com/slirp4netns-go/slirp4netns/sandbox"
)

// engineReadyTimeout bounds how long the engine may take to report ready;
// it normally takes a few milliseconds.
const engineReadyTimeout = 15 * time.Second

// engineProc is the supervisor's handle on the engine process. It implements
// the API server's backend by turning forward requests into ipc requests.
type engineProc struct {
	proc *childProc
	conn *ipc.Conn

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]chan ipc.Message

	ready chan error    // the first TypeReady or TypeError
	done  chan struct{} // closed when the ipc connection ends
	errMu sync.Mutex
	fatal error // why the engine ended, if it reported it

	killOnce sync.Once
}

// spawnEngine re-executes this binary as the engine. The engine then waits
// for its configuration (begin); starting it before the helper runs lets
// the two process start-ups overlap.
//
// The caller's goroutine must stay locked to its thread
// (runtime.LockOSThread) until the engine has been reaped: Pdeathsig is
// sent when the thread that forked the child ends, not the process
// (prctl(2); go.dev/issue/27505), and the runtime ends a thread when a
// goroutine exits locked to it, which helper.OpenTap does on purpose
// (Request.ThreadMayExit). A locked thread runs no other goroutine, so it
// cannot be the one discarded.
func spawnEngine(sandboxed bool, stderr io.Writer) (*engineProc, error) {
	conn, peer, err := ipc.Pair()
	if err != nil {
		return nil, fmt.Errorf("start engine: %w", err)
	}
	proc, err := startChild(enginePath, []string{"slirp4netns-engine"}, engineEnv(sandboxed), peer, stderr)
	// The child has its copy; ours must go so that its death reads as EOF.
	peer.Close()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start engine: %w", err)
	}
	e := &engineProc{
		proc:    proc,
		conn:    conn,
		pending: make(map[uint64]chan ipc.Message),
		ready:   make(chan error, 1),
		done:    make(chan struct{}),
	}
	// Nobody waits for the engine until kill: a goroutine blocked in
	// waitid(2) would hold a thread of its own all along, and an engine
	// that dies early is noticed by readLoop (EOF), not by its exit.
	go e.readLoop()
	return e, nil
}

// enginePath is what the engine re-executes: this binary.
const enginePath = "/proc/self/exe"

// engineEnv is the engine's environment: ours without the mode variables
// (childEnv), plus the engine's mode, its GOMAXPROCS and the sandbox
// switch; duplicates resolved as os/exec does (the last one wins).
func engineEnv(sandboxed bool) []string {
	env := append(childEnv(), ModeEnv+"="+ModeEngine)
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		// The engine's runtime then starts with its Ps rather than
		// dropping the extra ones later (policy.EngineProcs).
		env = append(env, "GOMAXPROCS="+strconv.Itoa(policy.EngineProcs(runtime.NumCPU())))
	}
	if sandboxed {
		// The sandbox is entered by a constructor before the engine's Go
		// runtime starts (package sandbox), so it is chosen by environment.
		env = append(env, sandbox.SandboxEnv+"=1")
	}
	return (&exec.Cmd{Env: env}).Environ()
}

// begin hands the engine its link fd and configuration; the engine then
// sets up while the caller goes on, and reports on e.ready (run.wait
// watches it). On failure the engine is killed.
func (e *engineProc) begin(start proto.EngineStart, link *os.File) error {
	if err := e.conn.SendBody(ipc.TypeEngineStart, 0, start, link); err != nil {
		e.kill()
		return fmt.Errorf("start engine: %w", err)
	}
	return nil
}

// readLoop dispatches the engine's messages until the connection ends.
func (e *engineProc) readLoop() {
	defer close(e.done)
	for {
		m, files, err := e.conn.Recv()
		for _, f := range files {
			f.Close() // the engine never sends fds; do not leak any
		}
		if err != nil {
			return
		}
		switch m.Type {
		case ipc.TypeReady:
			e.signalReady(nil)
		case ipc.TypeError:
			err := errors.New(m.Error)
			e.errMu.Lock()
			e.fatal = err
			e.errMu.Unlock()
			e.signalReady(err)
		case ipc.TypeReply:
			e.mu.Lock()
			ch := e.pending[m.Seq]
			delete(e.pending, m.Seq)
			e.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		}
	}
}

func (e *engineProc) signalReady(err error) {
	select {
	case e.ready <- err:
	default:
	}
}

// exitReason says why the engine ended: its own report, or its exit status.
func (e *engineProc) exitReason() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	if e.fatal != nil {
		return e.fatal
	}
	return errors.New("connection to engine lost")
}

// request sends one request and waits for its reply.
func (e *engineProc) request(ctx context.Context, t string, body any, files ...*os.File) error {
	ch := make(chan ipc.Message, 1)
	e.mu.Lock()
	e.seq++
	seq := e.seq
	e.pending[seq] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.pending, seq)
		e.mu.Unlock()
	}()
	if err := e.conn.SendBody(t, seq, body, files...); err != nil {
		return err
	}
	select {
	case m := <-ch:
		if m.Error != "" {
			return errors.New(m.Error)
		}
		return nil
	case <-e.done:
		return fmt.Errorf("%s: engine gone: %w", t, e.exitReason())
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", t, ctx.Err())
	}
}

// AddForward asks the engine to serve a host socket the supervisor bound.
func (e *engineProc) AddForward(ctx context.Context, fwd proto.Forward, sock *os.File) error {
	return e.request(ctx, ipc.TypeAddForward, fwd, sock)
}

// RemoveForward asks the engine to stop serving forward id.
func (e *engineProc) RemoveForward(ctx context.Context, id int) error {
	return e.request(ctx, ipc.TypeRemoveForward, proto.Forward{ID: id})
}

// Done is closed when the engine's ipc connection ends (it exited or died).
func (e *engineProc) Done() <-chan struct{} { return e.done }

// kill ends the engine at once and waits until it is gone. This is also
// how the supervisor stops it at exit: the engine holds nothing that needs
// an orderly close (the supervisor owns the API socket, the BESS socket
// file and the forwards' listening sockets; the kernel closes the engine's
// TAP and sockets when it dies, as it does for the C slirp4netns, which
// simply exits), so its own teardown (resetting every guest connection
// into a TAP about to vanish, stopping the netstack's goroutines) would
// only cost time and CPU just when podman tears the container down.
// It may be called more than once.
func (e *engineProc) kill() {
	e.killOnce.Do(func() {
		e.proc.kill()
		e.conn.Close()
	})
}

// closeInheritedOnExec marks every descriptor from 3 up close-on-exec, so
// that the engine and the helper inherit only what they are handed (Go's
// exec closes only close-on-exec descriptors, and what our caller passed
// us is not): not the caller's --ready-fd, whose reader would otherwise
// see EOF only when the engine exits (the C slirp4netns closes it right
// after writing "1"), nor its --exit-fd or whatever else it left open,
// which a sandboxed engine has no business holding.
func closeInheritedOnExec() error {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return nil
	}
	// Before Linux 5.11, or close_range refused by a caller's seccomp
	// filter: one by one.
	return markEachCloseOnExec()
}

// markEachCloseOnExec marks the descriptors from 3 up listed in
// /proc/self/fd close-on-exec.
func markEachCloseOnExec() error {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return wrapCloexec(err)
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// The directory's own descriptor is gone by now: EBADF is fine.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return wrapCloexec(err)
		}
	}
	return nil
}

func wrapCloexec(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
}

// childEnv is our environment without any of the variables that steer a
// child's mode, so that a caller's environment cannot switch them on.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		// The sandbox self-test hook only makes the engine report what
		// its confinement refuses; the tests pass it through us.
		if !strings.HasPrefix(kv, "_SLIRP4NETNS_") || strings.HasPrefix(kv, sandbox.SelfTestEnv) {
			env = append(env, kv)
		}
	}
	return env
}
