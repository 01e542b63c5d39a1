package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc"
)

// fakeEngineEnv makes the re-executed test binary play the engine:
// "fail" reports a start-up error, "exit" dies without a word, "ready"
// reports ready and serves until told to shut down. (Not _SLIRP4NETNS_*:
// childEnv strips those.)
const fakeEngineEnv = "SUPERVISOR_TEST_FAKE_ENGINE"

// fakeEngineLogEnv names a file the fake engine appends its PID and the
// type of every message it receives to, one a line.
const fakeEngineLogEnv = "SUPERVISOR_TEST_FAKE_ENGINE_LOG"

// fakeLog appends line to the fake engine's log, if it has one.
func fakeLog(line string) {
	path := os.Getenv(fakeEngineLogEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func TestMain(m *testing.M) {
	if os.Getenv(ModeEnv) == ModeEngine {
		os.Exit(fakeEngine(os.Getenv(fakeEngineEnv)))
	}
	os.Exit(m.Run())
}

// fakeEngine receives the start message as the engine does, then behaves
// as mode says.
func fakeEngine(mode string) int {
	conn, err := ipc.FromFD(3)
	if err != nil {
		return 2
	}
	defer conn.Close()
	fakeLog(fmt.Sprint("pid ", os.Getpid()))
	m, files, err := conn.Recv()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return 2
	}
	fakeLog(m.Type)
	switch mode {
	case "fail":
		_ = conn.Send(ipc.Message{Type: ipc.TypeError, Error: "fake engine cannot start"})
		return 1
	case "exit":
		return 1
	}
	if conn.SendBody(ipc.TypeReady, 0, nil) != nil {
		return 2
	}
	for {
		m, files, err := conn.Recv()
		for _, f := range files {
			f.Close()
		}
		if err == nil {
			fakeLog(m.Type)
		}
		if err != nil || m.Type == ipc.TypeShutdown {
			return 0
		}
	}
}

// lifecycle runs a BESS-mode supervisor (no namespaces needed) against the
// fake engine; exitFD, if not nil, is passed as --exit-fd. It returns
// what the ready fd received, the output and main's error.
func lifecycle(t *testing.T, mode string, exitFD *os.File) (ready, output string, err error) {
	t.Helper()
	t.Setenv(fakeEngineEnv, mode)
	dir := t.TempDir()
	readyR, readyFD := readyPipe(t)
	args := []string{"--target-type=bess", "-r", fmt.Sprint(readyFD), "--api-socket", filepath.Join(dir, "api.sock")}
	if exitFD != nil {
		args = append(args, "-e", fmt.Sprint(exitFD.Fd()))
	}
	opts, err := ParseArgs(append(args, filepath.Join(dir, "bess.sock")))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s := &run{cfg: opts.Config, stdout: &out, stderr: &out}
	runErr := s.main()
	got, _ := io.ReadAll(readyR) // EOF: signalReady closed it, or it leaks until the test ends
	for _, name := range []string{"api.sock", "bess.sock"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
	return string(got), out.String(), runErr
}

// TestReadyBeforeEngine: the ready fd is written once the link and the API
// socket are there, without waiting for the engine's own start-up; an
// engine that then fails to start still makes the supervisor fail, with
// the engine's reason, and clean up.
func TestReadyBeforeEngine(t *testing.T) {
	for _, tc := range []struct{ mode, wantErr string }{
		{"fail", "engine failed to start: fake engine cannot start"},
		{"exit", "engine exited before it was ready"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ready, out, err := lifecycle(t, tc.mode, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("main = %v, want %q\noutput:\n%s", err, tc.wantErr, out)
			}
			if ready != "1" {
				t.Errorf("ready fd got %q, want \"1\"", ready)
			}
		})
	}
}

// TestExitFDAfterReady: with a ready engine, closing --exit-fd ends the
// supervisor cleanly.
func TestExitFDAfterReady(t *testing.T) {
	exitR, exitW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer exitR.Close()
	exitW.Close() // already closed: the supervisor stops as soon as it waits
	ready, out, err := lifecycle(t, "ready", exitR)
	if err != nil {
		t.Fatalf("main = %v\noutput:\n%s", err, out)
	}
	if ready != "1" {
		t.Errorf("ready fd got %q, want \"1\"", ready)
	}
}

// TestExitKillsEngine: at exit the supervisor kills the engine rather
// than asking it for an orderly close (which only costs time and CPU: the
// engine holds nothing that needs one), and the engine is gone when the
// supervisor returns.
func TestExitKillsEngine(t *testing.T) {
	log := filepath.Join(t.TempDir(), "engine.log")
	t.Setenv(fakeEngineLogEnv, log)
	exitR, exitW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer exitR.Close()
	// Close the exit-fd once the engine has its start message (or after
	// 10 s at most), so that it runs when the supervisor stops it.
	go func() {
		defer exitW.Close()
		for range 1000 {
			if b, _ := os.ReadFile(log); strings.Contains(string(b), ipc.TypeEngineStart) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if _, out, err := lifecycle(t, "ready", exitR); err != nil {
		t.Fatalf("main = %v\noutput:\n%s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "pid ") || lines[1] != ipc.TypeEngineStart {
		t.Fatalf("the engine's log: %q; want its PID, then only %q", lines, ipc.TypeEngineStart)
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimPrefix(lines[0], "pid "), &pid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(pid, 0); err != unix.ESRCH {
		t.Errorf("kill(engine %d, 0) after the supervisor returned: %v, want ESRCH", pid, err)
	}
}

// TestAfterReady: the after-ready hook (Main lowers GOMAXPROCS there) runs
// once, when the ready fd already holds its "1" and is closed for good:
// its reader sees EOF although the engine runs, because the engine does
// not inherit it (closeInheritedOnExec), as the C version, which has no
// child then, closes it.
func TestAfterReady(t *testing.T) {
	t.Setenv(fakeEngineEnv, "ready")
	dir := t.TempDir()
	readyR, readyFD := readyPipe(t)
	exitR, exitW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer exitR.Close()
	exitW.Close()
	opts, err := ParseArgs([]string{"--target-type=bess", "-r", fmt.Sprint(readyFD), "-e", fmt.Sprint(exitR.Fd()),
		filepath.Join(dir, "bess.sock")})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	var out bytes.Buffer
	s := &run{cfg: opts.Config, stdout: &out, stderr: &out, afterReady: func() {
		// All there already; the deadline only bounds a failure.
		_ = readyR.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(readyR)
		seen = append(seen, fmt.Sprintf("%q %v", b, err))
	}}
	if err := s.main(); err != nil {
		t.Fatalf("main = %v\noutput:\n%s", err, out.String())
	}
	if want := []string{`"1" <nil>`}; !slices.Equal(seen, want) {
		t.Errorf("after-ready hook saw %q, want %q", seen, want)
	}
}

// TestCloseInheritedOnExec: both ways of marking inherited descriptors
// close-on-exec reach a descriptor opened without the flag.
func TestCloseInheritedOnExec(t *testing.T) {
	for name, mark := range map[string]func() error{
		"close_range": closeInheritedOnExec,
		"one by one":  markEachCloseOnExec,
	} {
		var p [2]int
		if err := unix.Pipe2(p[:], 0); err != nil {
			t.Fatal(err)
		}
		if err := mark(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for _, fd := range p {
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("%s: fd %d flags %#x, %v; want FD_CLOEXEC", name, fd, flags, err)
			}
			unix.Close(fd)
		}
	}
}

// readyPipe returns a pipe for --ready-fd: its read end (closed when the
// test ends) and a bare descriptor of its write end, which the supervisor
// owns (signalReady closes the fd it writes to).
func readyPipe(t *testing.T) (*os.File, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r, fd
}

// TestStartFailureCleanup: the API socket is created while the link is
// being opened (spawnAndOpen). When either fails the supervisor reports
// the link's error before the socket's, kills the engine, and leaves no
// socket file behind; what was at a refused API socket path is untouched.
func TestStartFailureCleanup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		badLink   bool // the BESS socket's directory does not exist
		apiIsFile bool // a regular file is at the API socket path
		wantErr   string
	}{
		{name: "link", badLink: true, wantErr: "bess.sock"},
		{name: "api", apiIsFile: true, wantErr: "api.sock"},
		{name: "both", badLink: true, apiIsFile: true, wantErr: "bess.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(fakeEngineEnv, "ready")
			dir := t.TempDir()
			api := filepath.Join(dir, "api.sock")
			bess := filepath.Join(dir, "bess.sock")
			if tc.badLink {
				bess = filepath.Join(dir, "missing", "bess.sock")
			}
			if tc.apiIsFile {
				if err := os.WriteFile(api, []byte("keep"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			opts, err := ParseArgs([]string{"--target-type=bess", "--api-socket", api, bess})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			s := &run{cfg: opts.Config, stdout: &out, stderr: &out}
			err = s.main()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("main = %v, want an error naming %s\noutput:\n%s", err, tc.wantErr, out.String())
			}
			b, err := os.ReadFile(api)
			switch {
			case tc.apiIsFile && string(b) != "keep":
				t.Errorf("the file at the API socket path: %q, %v; want it untouched", b, err)
			case !tc.apiIsFile && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("API socket left behind: %v", err)
			}
			if _, err := os.Lstat(bess); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("BESS socket left behind: %v", err)
			}
			// The engine was killed and reaped: this process has no child.
			if kids := children(t); len(kids) != 0 {
				t.Errorf("children left after the supervisor returned: %v", kids)
			}
		})
	}
}

// children lists this process's child processes, running or not reaped.
func children(t *testing.T) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "children"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // a thread may end meanwhile
			t.Fatal(err)
		}
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}
