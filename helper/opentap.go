package helper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// selfExe is the running binary; the helper is a re-execution of it.
const selfExe = "/proc/self/exe"

// Request says where and how the helper opens the TAP.
type Request struct {
	// UsernsPath is the user namespace to join first; empty for none. A
	// namespace equal to the caller's own is not joined.
	UsernsPath string
	// NetnsPath is the network namespace the TAP is opened in (required).
	NetnsPath string
	// Config is sent to the helper as is.
	Config proto.HelperConfig
	// Stderr receives the helper's diagnostics; nil means os.Stderr.
	Stderr io.Writer
	// ThreadMayExit lets OpenTap open the TAP on one of our threads even
	// when that thread cannot return to our network namespace: the thread
	// is then discarded (it exits), which saves the helper process. Set it
	// only when every child started with Pdeathsig was started from a
	// thread that stays locked (runtime.LockOSThread) while the child
	// lives: the kernel sends that signal when the creating *thread* ends
	// (prctl(2) PR_SET_PDEATHSIG; go.dev/issue/27505).
	ThreadMayExit bool
}

// OpenTap runs the helper for req and returns the TAP it opened. The
// namespace files are opened and checked here first, so that a wrong PID or
// path is reported before any process starts. The helper is killed if ctx
// ends first; it never outlives this call.
func OpenTap(ctx context.Context, req Request) (*os.File, proto.TapInfo, error) {
	ns, err := openNamespaces(req.UsernsPath, req.NetnsPath)
	if err != nil {
		return nil, proto.TapInfo{}, err
	}
	defer ns.close()
	if !needsUserns(ns.userns) {
		tap, info, err := openInProcess(ns.netns, req.Config, req.ThreadMayExit, stderrOf(req))
		if !errors.Is(err, errNoInProcess) {
			return tap, info, err
		}
	}
	conn, peer, err := ipc.Pair()
	if err != nil {
		return nil, proto.TapInfo{}, fmt.Errorf("helper: %w", err)
	}
	defer conn.Close()
	cmd := helperCommand(ns, peer, req.Stderr)
	// Pdeathsig fires when the thread that started the child exits; keep
	// that thread alive (locked to us) until the helper has been reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = cmd.Start()
	// The child has its copies; ours must go so that its death reads as EOF.
	peer.Close()
	ns.close()
	if err != nil {
		return nil, proto.TapInfo{}, fmt.Errorf("start helper: %w", err)
	}
	tap, info, xerr := exchangeBounded(ctx, cmd, conn, req.Config)
	werr := waitBounded(ctx, cmd)
	if xerr != nil {
		return nil, proto.TapInfo{}, helperError(xerr, werr)
	}
	return tap, info, nil
}

// CheckTarget opens and checks the namespace files the way OpenTap does,
// without starting anything, so the supervisor can fail early.
func CheckTarget(usernsPath, netnsPath string) error {
	ns, err := openNamespaces(usernsPath, netnsPath)
	if err != nil {
		return err
	}
	ns.close()
	return nil
}

// namespaces holds the target's namespace files; userns may be nil.
type namespaces struct {
	userns, netns *os.File
}

func (n *namespaces) close() {
	for _, f := range []**os.File{&n.userns, &n.netns} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// openNamespaces opens the network namespace and, when usernsPath is not
// empty, the user namespace, checking that each really is one of its kind.
func openNamespaces(usernsPath, netnsPath string) (*namespaces, error) {
	if netnsPath == "" {
		return nil, errors.New("open netns: empty path")
	}
	netns, err := openNamespace("netns", netnsPath, unix.CLONE_NEWNET)
	if err != nil {
		return nil, err
	}
	ns := &namespaces{netns: netns}
	if usernsPath != "" {
		ns.userns, err = openNamespace("userns", usernsPath, unix.CLONE_NEWUSER)
		if err != nil {
			ns.close()
			return nil, err
		}
	}
	return ns, nil
}

// openNamespace opens path and checks with NS_GET_NSTYPE that it is a
// namespace of type nstype (a CLONE_NEW* flag).
func openNamespace(kind, path string, nstype int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("open %s %q: %w", kind, path, err)
	}
	got, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s %q: not a namespace file: %w", kind, path, err)
	}
	if got != nstype {
		f.Close()
		return nil, fmt.Errorf("open %s %q: not a %s namespace (type %#x)", kind, path, nsTypeName(nstype), got)
	}
	return f, nil
}

func nsTypeName(nstype int) string {
	if nstype == unix.CLONE_NEWUSER {
		return "user"
	}
	return "network"
}

// helperCommand builds the re-execution of this binary in helper mode. fd 3
// is the ipc peer, then the user namespace (if any) and the network
// namespace; environment variables name those two.
func helperCommand(ns *namespaces, peer *os.File, stderr io.Writer) *exec.Cmd {
	if stderr == nil {
		stderr = os.Stderr
	}
	cmd := &exec.Cmd{
		Path:   selfExe,
		Args:   []string{os.Args[0]},
		Stderr: stderr,
		// The helper must not outlive us if we are killed mid-exchange.
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	env := append(childEnv(os.Environ()), modeEnv+"="+modeHelper)
	cmd.ExtraFiles = []*os.File{peer}
	if ns.userns != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, ns.userns)
		env = append(env, usernsFDEnv+"="+strconv.Itoa(ipcFD+len(cmd.ExtraFiles)-1))
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, ns.netns)
	env = append(env, netnsFDEnv+"="+strconv.Itoa(ipcFD+len(cmd.ExtraFiles)-1))
	cmd.Env = env
	return cmd
}

// childEnv is env without our private variables, so that a stale value
// (say, from a supervisor that is itself a child of ours) never leaks in.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "_SLIRP4NETNS_") {
			out = append(out, kv)
		}
	}
	return out
}

type exchangeResult struct {
	tap  *os.File
	info proto.TapInfo
	err  error
}

// exchangeBounded runs exchange, giving up (and killing the helper) when
// ctx ends first.
func exchangeBounded(ctx context.Context, cmd *exec.Cmd, conn *ipc.Conn, cfg proto.HelperConfig) (*os.File, proto.TapInfo, error) {
	done := make(chan exchangeResult, 1)
	go func() {
		tap, info, err := exchange(conn, cfg)
		done <- exchangeResult{tap, info, err}
	}()
	select {
	case r := <-done:
		return r.tap, r.info, r.err
	case <-ctx.Done():
		cmd.Process.Kill()
		conn.Close() // unblocks exchange
		if r := <-done; r.tap != nil {
			r.tap.Close()
		}
		return nil, proto.TapInfo{}, fmt.Errorf("helper: %w", ctx.Err())
	}
}

// exchange sends the configuration and reads the answer.
func exchange(conn *ipc.Conn, cfg proto.HelperConfig) (*os.File, proto.TapInfo, error) {
	// A send error (the helper died at start) is reported by the Recv
	// that follows, as EOF, and then by the exit status.
	_ = conn.SendBody(ipc.TypeHelperConfig, 0, cfg)
	m, files, err := conn.Recv()
	if err != nil {
		return nil, proto.TapInfo{}, err
	}
	switch {
	case m.Type == ipc.TypeError:
		closeFiles(files)
		return nil, proto.TapInfo{}, &remoteError{msg: m.Error}
	case m.Type != ipc.TypeTap:
		closeFiles(files)
		return nil, proto.TapInfo{}, fmt.Errorf("unexpected message %q", m.Type)
	case len(files) != 1:
		closeFiles(files)
		return nil, proto.TapInfo{}, fmt.Errorf("tap message carries %d fds, want 1", len(files))
	}
	var info proto.TapInfo
	if err := m.Decode(&info); err != nil {
		files[0].Close()
		return nil, proto.TapInfo{}, err
	}
	return files[0], info, nil
}

// remoteError is an error the helper reported over ipc.
type remoteError struct{ msg string }

func (e *remoteError) Error() string { return e.msg }

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// waitBounded reaps the helper, killing it if ctx ends first.
func waitBounded(ctx context.Context, cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		return <-done
	}
}

// helperError turns the exchange error and the exit status into one error.
// A helper that died without a word (e.g. setns failed in the constructor,
// which printed why on stderr) shows up as EOF plus its exit status.
func helperError(xerr, werr error) error {
	var re *remoteError
	switch {
	case errors.As(xerr, &re):
		return fmt.Errorf("helper: %s", re.msg)
	case errors.Is(xerr, io.EOF) && werr != nil:
		return fmt.Errorf("helper failed before sending the TAP: %w", werr)
	case errors.Is(xerr, io.EOF):
		return errors.New("helper exited without sending the TAP")
	case errors.Is(xerr, context.Canceled) || errors.Is(xerr, context.DeadlineExceeded):
		return xerr // already says "helper: "
	default:
		return fmt.Errorf("helper: %w", xerr)
	}
}

// stderrOf is where warnings of the TAP set-up go.
func stderrOf(req Request) io.Writer {
	if req.Stderr != nil {
		return req.Stderr
	}
	return os.Stderr
}
