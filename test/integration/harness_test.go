package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the harness. They bound every wait so that a broken binary
// fails a test instead of hanging the suite.
const (
	readyTimeout   = 15 * time.Second // slirp4netns start-up to ready-fd
	exitTimeout    = 10 * time.Second // exit-fd/SIGTERM to process exit
	leftoverWait   = 3 * time.Second  // descendants and TAP gone after exit
	commandTimeout = 60 * time.Second // one command in the guest
)

// Guest is a network namespace (optionally with its own user namespace)
// kept alive by a sleeping process.
type Guest struct {
	PID    int
	UserNS bool // true: the guest has its own user namespace
	cmd    *exec.Cmd
}

// StartGuest creates a guest network namespace owned by the outer user
// namespace; it is removed when the test ends.
func StartGuest(t *testing.T) *Guest {
	t.Helper()
	return startGuest(t, false)
}

// StartUserGuest creates a guest with its own user and network namespaces,
// like podman's rootless containers.
func StartUserGuest(t *testing.T) *Guest {
	t.Helper()
	return startGuest(t, true)
}

func startGuest(t *testing.T, userns bool) *Guest {
	t.Helper()
	args := []string{"--net"}
	if userns {
		args = []string{"--user", "--map-root-user", "--net"}
	}
	cmd := exec.Command("unshare", append(args, "sleep", "3600")...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start guest: %v", err)
	}
	g := &Guest{PID: cmd.Process.Pid, UserNS: userns, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// unshare(1) execs sleep once the namespaces exist: wait for that, or a
	// fast test would join the half-made guest's old namespaces.
	waitFor(t, 5*time.Second, "guest namespace", func() bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", g.PID))
		return err == nil && strings.TrimSpace(string(comm)) == "sleep"
	})
	return g
}

// Alive reports whether the guest's process still runs.
func (g *Guest) Alive() bool {
	return g.cmd.ProcessState == nil && syscall.Kill(g.PID, 0) == nil
}

// NetnsPath is the guest's network namespace file.
func (g *Guest) NetnsPath() string { return fmt.Sprintf("/proc/%d/ns/net", g.PID) }

// UsernsPath is the guest's user namespace file.
func (g *Guest) UsernsPath() string { return fmt.Sprintf("/proc/%d/ns/user", g.PID) }

// nsenter returns the argv prefix that runs a command in the guest.
func (g *Guest) nsenter() []string {
	args := []string{"nsenter", "-t", strconv.Itoa(g.PID), "-n"}
	if g.UserNS {
		args = append(args, "-U", "--preserve-credentials")
	}
	return args
}

// Command returns a command that runs argv in the guest.
func (g *Guest) Command(ctx context.Context, argv ...string) *exec.Cmd {
	full := append(g.nsenter(), argv...)
	return exec.CommandContext(ctx, full[0], full[1:]...)
}

// InGuestErr runs argv in the guest and returns its combined output.
func InGuestErr(g *Guest, timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := g.Command(ctx, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in guest %d: %q: %w", g.PID, argv, err)
	}
	return string(out), nil
}

// InGuest runs argv in the guest, fails the test if it fails, and returns
// its combined output.
func InGuest(t *testing.T, g *Guest, argv ...string) string {
	t.Helper()
	out, err := InGuestErr(g, commandTimeout, argv...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// toolArgv returns the argv that runs one of this binary's tools (see
// runTool) in a guest.
func toolArgv(tool string, args ...string) []string {
	self, _ := os.Executable()
	return append([]string{"env", envStage + "=tool", self, tool}, args...) // env(1) replaces the stage
}

// GuestTool runs a tool of this test binary in the guest and returns its
// output; a failing tool fails the test.
func GuestTool(t *testing.T, g *Guest, tool string, args ...string) string {
	t.Helper()
	return InGuest(t, g, toolArgv(tool, args...)...)
}

// GuestToolErr is GuestTool for runs that may fail.
func GuestToolErr(g *Guest, timeout time.Duration, tool string, args ...string) (string, error) {
	return InGuestErr(g, timeout, toolArgv(tool, args...)...)
}

// StartGuestServer runs the "serve" tool in the guest (a TCP or UDP server
// answering "peer=IP") and waits until it listens; it is stopped when the
// test ends.
func StartGuestServer(t *testing.T, g *Guest, network, addr string) {
	t.Helper()
	runUntilReady(t, g.Command(context.Background(), toolArgv("serve", network, addr)...), "ready", 10*time.Second)
}

// runUntilReady starts cmd, waits up to timeout for a line equal to marker
// on its stdout and returns everything it printed until then (stdout and
// stderr). cmd is killed when the test ends if it still runs.
func runUntilReady(t *testing.T, cmd *exec.Cmd, marker string, timeout time.Duration) string {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	seen := make(chan bool, 1) // true: marker seen; false: stdout ended first
	var out syncBuffer
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if !found && strings.TrimSpace(sc.Text()) == marker {
				found = true
				seen <- true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		if !found {
			seen <- false
		}
	}()
	select {
	case ok := <-seen:
		if !ok {
			t.Fatalf("%q ended before %q:\nstdout:\n%s\nstderr:\n%s", cmd.Args, marker, out.String(), stderr.String())
		}
	case <-time.After(timeout):
		t.Fatalf("%q: no %q after %v:\nstdout:\n%s\nstderr:\n%s", cmd.Args, marker, timeout, out.String(), stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%q stderr:\n%s", cmd.Args, stderr.String())
		}
	})
	return out.String() + stderr.String()
}

// SlirpOptions says how to start slirp4netns.
type SlirpOptions struct {
	// Args are the options (before the positional arguments).
	Args []string
	// Positional replaces the default positional arguments "PID tap0".
	Positional []string
	// API adds --api-socket=<temp dir>/api.sock.
	API bool
	// LeavesAPISocket: the implementation is known to leave its API socket
	// file (C 1.2.0 with --enable-sandbox cannot see it after pivot_root);
	// the leftover check then removes it instead of failing.
	LeavesAPISocket bool
	// ReadyFDClosed passes --ready-fd=3 with fd 3 not open.
	ReadyFDClosed bool
	// Tap is the TAP name the leftover check looks for in the guest;
	// default "tap0" unless Positional is set.
	Tap string
	// ExtraFiles are inherited as fds 5, 6, ... (after the ready-fd 3 and
	// the exit-fd 4), e.g. a TAP for --netns-type=tapfd.
	ExtraFiles []*os.File
	// Env adds KEY=VALUE entries to slirp4netns's environment.
	Env []string
	// Wrapper is a command prefix that ends by exec'ing slirp4netns (e.g.
	// nsenter into a user namespace, as podman runs it), so that the
	// process started is still slirp4netns itself.
	Wrapper []string
}

// Slirp is a running slirp4netns.
type Slirp struct {
	readyOnce sync.Once // waitReady reads the ready-fd once
	readyErr  error
	Cmd       *exec.Cmd
	APISocket string   // empty without SlirpOptions.API
	Stderr    *outFile // stdout and stderr

	guest     *Guest
	tap       string
	leavesAPI bool
	mark      string
	ready     *os.File // read end of the --ready-fd pipe
	exitW     *os.File // write end of the --exit-fd pipe
	waitCh    chan struct{}
	err       error // Wait's result, valid after waitCh is closed
}

// StartSlirp starts the binary under test for guest with args, then
// "PID tap0", --ready-fd and --exit-fd; waits until it writes to the
// ready-fd; and registers a cleanup that closes the exit-fd, expects exit
// status 0 and checks that nothing is left (no descendant process, no TAP in
// the guest, no API socket file).
func StartSlirp(t *testing.T, g *Guest, args ...string) *Slirp {
	t.Helper()
	return StartSlirpWith(t, g, SlirpOptions{Args: args})
}

// StartSlirpWith is StartSlirp with every option.
func StartSlirpWith(t *testing.T, g *Guest, o SlirpOptions) *Slirp {
	t.Helper()
	s := launchSlirp(t, g, o)
	if err := s.waitReady(); err != nil {
		s.kill()
		t.Fatalf("slirp4netns %q: %v\nstderr:\n%s", s.Cmd.Args, err, s.Stderr.String())
	}
	t.Cleanup(func() { s.stopAndCheck(t) })
	return s
}

// launchSlirp starts slirp4netns without waiting for it.
func launchSlirp(t *testing.T, g *Guest, o SlirpOptions) *Slirp {
	t.Helper()
	bin, err := slirpBin()
	if err != nil {
		t.Fatal(err)
	}
	s := &Slirp{guest: g, tap: o.Tap, leavesAPI: o.LeavesAPISocket, mark: rand.Text(), waitCh: make(chan struct{})}
	pos := o.Positional
	if pos == nil {
		pos = []string{strconv.Itoa(g.PID), "tap0"}
		if s.tap == "" {
			s.tap = "tap0"
		}
	}
	args := []string{"--ready-fd=3", "--exit-fd=4"}
	if o.API {
		s.APISocket = filepath.Join(t.TempDir(), "api.sock")
		args = append(args, "--api-socket="+s.APISocket)
	}
	args = append(args, extraArgs()...)
	args = append(append(args, o.Args...), pos...)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	exitR, exitW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.ready, s.exitW = readyR, exitW
	s.Cmd = exec.Command(bin, args...)
	if len(o.Wrapper) > 0 {
		argv := append(append(slices.Clone(o.Wrapper[1:]), bin), args...)
		s.Cmd = exec.Command(o.Wrapper[0], argv...)
	}
	s.Cmd.Env = append(withEnv(os.Environ(), envMark, s.mark), o.Env...)
	s.Cmd.ExtraFiles = append([]*os.File{readyW, exitR}, o.ExtraFiles...) // fds 3, 4, 5...
	if o.ReadyFDClosed {
		s.Cmd.ExtraFiles[0] = nil
	}
	// A file, not a pipe: Wait must return when slirp4netns exits even if a
	// leaked descendant still holds its stderr (the leftover check reports
	// that descendant).
	if s.Stderr, err = newOutFile(t); err != nil {
		t.Fatal(err)
	}
	s.Cmd.Stdout = s.Stderr.f
	s.Cmd.Stderr = s.Stderr.f
	err = s.Cmd.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		s.err = s.Cmd.Wait()
		close(s.waitCh)
	}()
	t.Cleanup(func() {
		s.kill()
		s.ready.Close()
		s.exitW.Close()
	})
	return s
}

// waitReady waits for the first byte on the ready-fd, which must be '1'.
func (s *Slirp) waitReady() error {
	s.readyOnce.Do(func() { s.readyErr = s.readReady() })
	return s.readyErr
}

// readReady reads the ready-fd once.
func (s *Slirp) readReady() error {
	if err := s.ready.SetReadDeadline(time.Now().Add(readyTimeout)); err != nil {
		return err
	}
	b := make([]byte, 1)
	n, err := s.ready.Read(b)
	switch {
	case n == 1 && b[0] == '1':
		return nil
	case n == 1:
		return fmt.Errorf("ready-fd: got %q, want \"1\"", b)
	case errors.Is(err, io.EOF):
		select {
		case <-s.waitCh:
			return fmt.Errorf("exited before ready: %v", s.err)
		case <-time.After(exitTimeout):
			return errors.New("closed the ready-fd without writing to it")
		}
	default:
		return fmt.Errorf("ready-fd: %w", err)
	}
}

// ReadyRest reads what follows the '1' on the ready-fd until EOF.
func (s *Slirp) ReadyRest() (string, error) {
	if err := s.ready.SetReadDeadline(time.Now().Add(readyTimeout)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(s.ready)
	return string(b), err
}

// PID is the process id of slirp4netns.
func (s *Slirp) PID() int { return s.Cmd.Process.Pid }

// Running reports whether slirp4netns has not exited.
func (s *Slirp) Running() bool {
	select {
	case <-s.waitCh:
		return false
	default:
		return true
	}
}

// CloseExitFD closes the write end of the --exit-fd pipe: slirp4netns must
// then shut down.
func (s *Slirp) CloseExitFD() { s.exitW.Close() }

// Wait waits for slirp4netns to exit and returns Cmd.Wait's error; ok is
// false if it did not exit in time.
func (s *Slirp) Wait(timeout time.Duration) (err error, ok bool) {
	select {
	case <-s.waitCh:
		return s.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

func (s *Slirp) kill() {
	if s.Running() {
		_ = s.Cmd.Process.Kill()
		<-s.waitCh
	}
}

// stopAndCheck is the cleanup of StartSlirp: shut down by the exit-fd,
// expect status 0, expect nothing left.
func (s *Slirp) stopAndCheck(t *testing.T) {
	t.Helper()
	if s.Running() {
		s.CloseExitFD()
		err, ok := s.Wait(exitTimeout)
		if !ok {
			s.kill()
			t.Errorf("slirp4netns did not exit within %v of closing the exit-fd\nstderr:\n%s", exitTimeout, s.Stderr.String())
		} else if err != nil {
			t.Errorf("slirp4netns after closing the exit-fd: %v (want exit status 0)\nstderr:\n%s", err, s.Stderr.String())
		}
	}
	s.CheckNothingLeft(t)
}

// CheckNothingLeft fails the test if a process started by this slirp4netns
// still runs, if its TAP is still in the guest, or if its API socket file
// still exists. Call it after the process exited.
func (s *Slirp) CheckNothingLeft(t *testing.T) {
	t.Helper()
	sock := s.APISocket
	if s.leavesAPI {
		_ = os.Remove(sock)
		sock = ""
	}
	if !checkNothingLeft(t, s.mark, s.guest, s.tap, sock) {
		t.Logf("slirp4netns %q output:\n%s", s.Cmd.Args, s.Stderr.String())
	}
}

// checkNothingLeft reports (and returns false) when something is left.
func checkNothingLeft(t *testing.T, mark string, g *Guest, tap, apiSocket string) bool {
	t.Helper()
	clean := true
	var left []string
	ok := poll(leftoverWait, func() bool {
		left = markedProcesses(mark)
		return len(left) == 0
	})
	if !ok {
		clean = false
		t.Errorf("processes left behind: %s", strings.Join(left, "; "))
	}
	if tap != "" && g != nil && g.Alive() {
		var out string
		ok := poll(leftoverWait, func() bool {
			var err error
			out, err = InGuestErr(g, commandTimeout, "ip", "-o", "link", "show", "dev", tap)
			return err != nil
		})
		if !ok {
			clean = false
			t.Errorf("TAP %s still in the guest: %s", tap, out)
		}
	}
	if apiSocket != "" {
		if _, err := os.Lstat(apiSocket); err == nil {
			clean = false
			t.Errorf("API socket %s left behind", apiSocket)
		}
	}
	return clean
}

// markedProcesses lists the live processes whose environment carries mark.
// Zombies have an empty environment and so do not count: they hold nothing.
func markedProcesses(mark string) []string {
	want := []byte(envMark + "=" + mark + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("pid %d %q", pid, bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '})))
	}
	return out
}

// FailResult is the outcome of a slirp4netns run that was expected to fail.
type FailResult struct {
	Err    error  // Cmd.Wait's error
	Stderr string // stdout and stderr
}

// RunSlirpFail runs slirp4netns with o (API socket and ready/exit fds as in
// StartSlirpWith), expects it to exit non-zero by itself with a message,
// without writing to the ready-fd, and to leave nothing behind.
func RunSlirpFail(t *testing.T, g *Guest, o SlirpOptions) FailResult {
	t.Helper()
	s := launchSlirp(t, g, o)
	err, ok := s.Wait(exitTimeout)
	if !ok {
		s.kill()
		t.Fatalf("slirp4netns %q still runs after %v; want an error exit\nstderr:\n%s", s.Cmd.Args, exitTimeout, s.Stderr.String())
	}
	res := FailResult{Err: err, Stderr: s.Stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
		t.Errorf("slirp4netns %q exited 0; want an error\nstderr:\n%s", s.Cmd.Args, res.Stderr)
	case !errors.As(err, &ee) || ee.ExitCode() < 1:
		t.Errorf("slirp4netns %q: %v; want a non-zero exit status", s.Cmd.Args, err)
	}
	if strings.TrimSpace(res.Stderr) == "" {
		t.Errorf("slirp4netns %q failed without a message on stderr", s.Cmd.Args)
	}
	if got, _ := s.ReadyRest(); got != "" {
		t.Errorf("slirp4netns %q wrote %q to the ready-fd before failing", s.Cmd.Args, got)
	}
	s.CheckNothingLeft(t)
	return res
}

// outFile collects a child's output in a file.
type outFile struct{ f *os.File }

func newOutFile(t *testing.T) (*outFile, error) {
	f, err := os.CreateTemp(t.TempDir(), "output")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { f.Close() })
	return &outFile{f: f}, nil
}

// String returns everything written so far.
func (o *outFile) String() string {
	b, err := os.ReadFile(o.f.Name())
	if err != nil {
		return fmt.Sprintf("(output unavailable: %v)", err)
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// poll calls cond every 20 ms until it returns true or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor is poll that fails the test on timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// envExtraArgs names options added to every slirp4netns the suite starts,
// e.g. "--enable-sandbox --enable-seccomp" to run the whole suite confined.
const envExtraArgs = "SLIRPTEST_EXTRA_ARGS"

// extraArgs returns the options of envExtraArgs.
func extraArgs() []string { return strings.Fields(os.Getenv(envExtraArgs)) }
