package supervisor

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// childProc is a child process started by startChild: what os/exec's Cmd
// does for the engine, without os.StartProcess's one-time pidfd probe (a
// throw-away child forked, waited for, and three pidfd calls: ~0.1-0.3 ms
// on the way to --ready-fd). Nothing in this process waits for "any
// child", so the pid stays ours, and cannot be reused, until kill reaps it.
type childProc struct {
	pid int
	// copied is closed when the copy of the child's stderr into a
	// writer that is not a file ends (nil when stderr is a file).
	copied chan struct{}
	// reaped makes kill idempotent: a second signal could reach a new
	// process that was given the reaped pid.
	reaped sync.Once
}

// startChild forks and executes path with argv and env, with stdin and
// stdout on /dev/null, stderr on stderr (a pipe copied into it when it is
// not a file, as os/exec does), extra as fd 3, in a process group of its
// own, and SIGKILL as its parent-death signal. Pdeathsig fires when the
// calling thread ends: see spawnEngine for the rule that keeps it alive.
// An exec that fails is reported as os/exec reports it ("fork/exec PATH:
// ...").
func startChild(path string, argv, env []string, extra *os.File, stderr io.Writer) (*childProc, error) {
	devIn, err := openDevNull(unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(devIn)
	devOut, err := openDevNull(unix.O_WRONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(devOut)
	errFD, copyFrom, err := stderrFD(stderr, devOut)
	if err != nil {
		return nil, err
	}
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{uintptr(devIn), uintptr(devOut), errFD, extra.Fd()},
		// The engine gets its own process group so that a terminal's ^C
		// reaches only the supervisor, which then shuts the engine down
		// in order.
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	pid, err := syscall.ForkExec(path, argv, attr)
	if copyFrom != nil {
		// The child holds the write end now (or failed to start).
		copyFrom.w.Close()
	}
	if err != nil {
		if copyFrom != nil {
			copyFrom.r.Close()
		}
		return nil, &os.PathError{Op: "fork/exec", Path: path, Err: err}
	}
	p := &childProc{pid: pid}
	if copyFrom != nil {
		p.copied = make(chan struct{})
		go copyFrom.run(stderr, p.copied)
	}
	return p, nil
}

// openDevNull opens /dev/null close-on-exec with the given access mode
// (the child gets a duplicate), outside the runtime's poller: it is only
// handed on.
func openDevNull(mode int) (int, error) {
	fd, err := unix.Open(os.DevNull, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: os.DevNull, Err: err}
	}
	return fd, nil
}

// stderrPipe carries a child's stderr into a writer that is not a file.
type stderrPipe struct{ r, w *os.File }

// run copies until the child (and whatever inherited the write end) has
// closed it, then closes done.
func (p *stderrPipe) run(dst io.Writer, done chan<- struct{}) {
	defer close(done)
	defer p.r.Close()
	_, _ = io.Copy(dst, p.r)
}

// stderrFD returns the descriptor the child's stderr should be, as os/exec
// chooses it: devNull when w is nil, the file's own when w is a file (its
// Fd), otherwise the write end of a pipe whose read end is to be copied
// into w.
func stderrFD(w io.Writer, devNull int) (uintptr, *stderrPipe, error) {
	if w == nil {
		return uintptr(devNull), nil, nil
	}
	if f, ok := w.(*os.File); ok {
		return f.Fd(), nil, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, fmt.Errorf("stderr pipe: %w", err)
	}
	return pw.Fd(), &stderrPipe{r: r, w: pw}, nil
}

// kill sends SIGKILL and reaps the child, then waits until its stderr has
// been copied. The process cannot have been reaped by anyone else, so the
// signal cannot reach a recycled pid. Calls after the first do nothing.
func (p *childProc) kill() {
	p.reaped.Do(func() {
		_ = unix.Kill(p.pid, unix.SIGKILL)
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(p.pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		if p.copied != nil {
			<-p.copied
		}
	})
}
