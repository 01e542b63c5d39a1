package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// Host ports of the reliability tests (the outer namespace is shared).
const (
	probePortLoopback = 18190 // listeners on the outer 127.0.0.1
	probePortSpoof    = 18191 // listeners on addrA
	fwdPortSIGTERM    = 18192
)

// engineArgv0 is the argv[0] the supervisor gives the engine process.
const engineArgv0 = "slirp4netns-engine"

func init() {
	tools["rawsend"] = toolRawSend
}

// markedPID returns the pid of the live process of this slirp4netns whose
// argv[0] is argv0, or 0.
func markedPID(mark, argv0 string) int {
	for _, p := range markedProcesses(mark) {
		// markedProcesses formats "pid N \"cmdline\"".
		var pid int
		if _, err := fmt.Sscanf(p, "pid %d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && string(bytes.SplitN(cmdline, []byte{0}, 2)[0]) == argv0 {
			return pid
		}
	}
	return 0
}

// EnginePID returns the pid of the engine of s (ours only), failing the
// test if there is none.
func EnginePID(t *testing.T, s *Slirp) int {
	t.Helper()
	var pid int
	waitFor(t, 5*time.Second, "the engine process", func() bool {
		pid = markedPID(s.mark, engineArgv0)
		return pid != 0
	})
	return pid
}

// exitStatus describes how a finished command ended: "exit N" or
// "signal NAME".
func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err.Error()
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ee.ExitCode())
}

// wantEnd is how slirp4netns should end after something happened to it.
type wantEnd struct {
	status string        // exitStatus's words, or "non-zero" for any but "exit 0"
	within time.Duration // how soon after it happened; 0: not checked
	says   string        // what its stderr must mention
}

// check compares how s ended (err, took after the event) with w; after
// names the event in the messages.
func (w wantEnd) check(t *testing.T, s *Slirp, after string, err error, took time.Duration) {
	t.Helper()
	got := exitStatus(err)
	bad := got != w.status
	if w.status == "non-zero" {
		bad = got == "exit 0"
	}
	if bad {
		t.Errorf("after %s: %s, want %s", after, got, w.status)
	}
	if w.within > 0 && took > w.within {
		t.Errorf("exited %v after %s, want < %v", took, after, w.within)
	}
	if !strings.Contains(s.Stderr.String(), w.says) {
		t.Errorf("after %s, stderr does not mention %q:\n%s", after, w.says, s.Stderr.String())
	}
}

// TestEngineKilled: SIGKILL to the engine makes the supervisor exit non-zero
// within 1 s, say why on stderr, and remove its API socket. C slirp4netns is
// one process: killing it leaves its socket file and nothing else.
func TestEngineKilled(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true, LeavesAPISocket: !goImpl()})
	pid := s.PID()
	if goImpl() {
		pid = EnginePID(t, s)
	}
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err, ok := s.Wait(exitTimeout)
	took := time.Since(start)
	if !ok {
		t.Fatalf("slirp4netns still runs %v after its engine was killed", exitTimeout)
	}
	t.Logf("engine killed: supervisor %s after %v; output:\n%s", exitStatus(err), took, s.Stderr.String())
	if !goImpl() {
		return // the process itself was killed; the cleanup checks the rest
	}
	wantEnd{status: "non-zero", within: time.Second, says: "engine"}.check(t, s, "its engine was killed", err, took)
}

// TestSupervisorKilled: SIGKILL to the supervisor ends the engine too (the
// leftover check finds no process of this instance) and the TAP goes away.
// Only the API socket file stays: nobody is left to remove it.
func TestSupervisorKilled(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true, LeavesAPISocket: true})
	var engine int
	if goImpl() {
		engine = EnginePID(t, s)
	}
	if err := s.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Wait(exitTimeout); !ok {
		t.Fatal("slirp4netns survived SIGKILL")
	}
	if engine != 0 {
		start := time.Now()
		gone := poll(2*time.Second, func() bool { return markedPID(s.mark, engineArgv0) == 0 })
		t.Logf("engine %d gone after %v: %v", engine, time.Since(start), gone)
	}
	// The cleanup's leftover check fails the test if the engine is alive.
}

// TestHelperFails: the helper fails mid-way. "tun-exists": the TAP name
// is taken by a TUN device (fails at TUNSETIFF). "multicast-mac": the
// kernel refuses the MAC after the TAP was created. Either way: a clear
// error, the guest's links and routes as they were, nothing left. (A
// guest that already has a default route is no such case: C 1.2.0 adds a
// second one; ours fails with "file exists" — reported, not tested here.)
func TestHelperFails(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup [][]string
		args  []string
		tap   string
		want  string // in the error message (lower case)
	}{
		{"tun-exists", [][]string{{"ip", "tuntap", "add", "dev", "tun9", "mode", "tun"}}, nil, "tun9", "tun"},
		{"multicast-mac", nil, []string{"--macaddress=01:00:5e:00:00:01"}, "tap0", "address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			for _, c := range tc.setup {
				InGuest(t, g, c...)
			}
			links := linkNames(InGuest(t, g, "ip", "-o", "link", "show"))
			routes := InGuest(t, g, "ip", "route", "show")
			args := append([]string{"-c"}, tc.args...)
			res := RunSlirpFail(t, g, SlirpOptions{Args: args, API: true, Positional: []string{strconv.Itoa(g.PID), tc.tap}})
			t.Logf("%s: %s; %q", tc.name, exitStatus(res.Err), lastLine(res.Stderr))
			if after := linkNames(InGuest(t, g, "ip", "-o", "link", "show")); after != links {
				t.Errorf("guest links changed by the failed start:\nbefore: %s\nafter:  %s", links, after)
			}
			if after := InGuest(t, g, "ip", "route", "show"); after != routes {
				t.Errorf("guest routes changed by the failed start:\nbefore: %s\nafter:  %s", routes, after)
			}
			if !strings.Contains(strings.ToLower(res.Stderr), tc.want) {
				t.Errorf("error does not mention %q: %q", tc.want, res.Stderr)
			}
		})
	}
}

// linkNames reduces `ip -o link show` to the interface names.
func linkNames(out string) string {
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return strings.Join(names, " ")
}

// TestTargetExits: the process named by PID exits. The TAP fd slirp4netns
// holds keeps the guest's network namespace alive, so C 1.2.0 never notices
// and runs on until its exit-fd closes (checked with make test-c). Ours
// watches the PID and ends cleanly: status 0, a message, nothing left.
func TestTargetExits(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true, LeavesAPISocket: !goImpl()})
	GuestTool(t, g, "echo", "tcp", hostPort("10.0.2.2", echoPort), "1000")
	start := time.Now()
	_ = g.cmd.Process.Kill()
	_ = g.cmd.Wait()
	if !goImpl() {
		if err, ok := s.Wait(2 * time.Second); ok {
			t.Errorf("C slirp4netns exited (%s) after its target did; want it to run on", exitStatus(err))
		}
		return // the cleanup closes the exit-fd and checks for leftovers
	}
	err, ok := s.Wait(exitTimeout)
	if !ok {
		t.Fatalf("slirp4netns still runs %v after the target process exited\n%s", exitTimeout, s.Stderr.String())
	}
	took := time.Since(start)
	t.Logf("target exited: slirp4netns %s after %v: %q", exitStatus(err), took, lastLine(s.Stderr.String()))
	wantEnd{status: "exit 0", within: time.Second, says: "target process"}.check(t, s, "the target exited", err, took)
}

// TestTapDeleted: the guest deletes the TAP. Ours: the engine's read
// fails, and slirp4netns exits 1 saying so, with nothing left.
func TestTapDeleted(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true, LeavesAPISocket: !goImpl()})
	InGuest(t, g, "ip", "link", "del", "tap0")
	start := time.Now()
	err, ok := s.Wait(3 * time.Second)
	if !goImpl() {
		t.Logf("C slirp4netns after the TAP was deleted: exited %v (%s)", ok, exitStatus(err))
		return
	}
	if !ok {
		t.Fatalf("slirp4netns still runs 3s after its TAP was deleted\n%s", s.Stderr.String())
	}
	t.Logf("TAP deleted: slirp4netns %s after %v: %q", exitStatus(err), time.Since(start), lastLine(s.Stderr.String()))
	wantEnd{status: "exit 1", says: "link"}.check(t, s, "the TAP was deleted", err, time.Since(start))
}

// TestExitFDDuringTransfer: closing the exit-fd while a large download
// runs ends slirp4netns at once with status 0 and nothing left.
func TestExitFDDuringTransfer(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c", "--mtu=65520"}, API: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := fmt.Sprintf("%s/blob?size=%d", gwHTTP, int64(4)<<30)
	curl := g.Command(ctx, "curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", url)
	var out syncBuffer
	curl.Stdout, curl.Stderr = &out, &out
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = curl.Process.Kill(); _ = curl.Wait() }()
	time.Sleep(700 * time.Millisecond) // well into the transfer
	start := time.Now()
	s.CloseExitFD()
	err, ok := s.Wait(exitTimeout)
	if !ok {
		t.Fatalf("still running %v after the exit-fd was closed during a transfer", exitTimeout)
	}
	took := time.Since(start)
	t.Logf("exit-fd closed during a download: %s after %v", exitStatus(err), took)
	if err != nil {
		t.Errorf("exit: %v, want status 0\n%s", err, s.Stderr.String())
	}
	if took > 3*time.Second {
		t.Errorf("took %v to exit during a transfer, want < 3s", took)
	}
}

// TestSIGTERMDuringAPIRequest: SIGTERM while API clients are connected (one
// that never finishes its request, another adding and removing forwards in
// a loop, so that requests to the engine are in flight) ends
// slirp4netns with status 0 within a second; the clients see their
// connection end instead of hanging.
func TestSIGTERMDuringAPIRequest(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true, LeavesAPISocket: !goImpl()})
	silent, err := net.Dial("unix", s.APISocket)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := silent.Write([]byte(`{"execute":`)); err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// add_hostfwd and remove_hostfwd in turn: both wait for the
			// engine, so SIGTERM meets requests in flight to it.
			n := sent.Load()
			req := fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%d,"guest_port":80}}`, fwdPortSIGTERM)
			if n%2 == 1 {
				req = fmt.Sprintf(`{"execute":"remove_hostfwd","arguments":{"id":%d}}`, n/2+1)
			}
			if _, err := testnet.APIRequest(s.APISocket, req); err != nil {
				return // the server went away: the expected end
			}
			sent.Add(1)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err, ok := s.Wait(exitTimeout)
	took := time.Since(start)
	close(stop)
	if !ok {
		t.Fatalf("still running %v after SIGTERM with API clients connected", exitTimeout)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("an API client still hangs 5s after slirp4netns exited")
	}
	_ = silent.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, rerr := silent.Read(make([]byte, 64))
	t.Logf("SIGTERM after %d API requests: %s after %v; silent client read: %v", sent.Load(), exitStatus(err), took, rerr)
	if !goImpl() {
		return // C serves one client at a time: the silent one blocks the rest
	}
	if sent.Load() == 0 {
		t.Errorf("no API request succeeded before SIGTERM (the silent client blocks the API?)")
	}
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Errorf("the silent client's connection stayed open after exit")
	}
	{
		if err != nil {
			t.Errorf("after SIGTERM: %v, want status 0", err)
		}
		if took > time.Second {
			t.Errorf("exited %v after SIGTERM, want < 1s", took)
		}
	}
}

// TestAPISocketExisting: what is already at the --api-socket path. Ours
// replaces only a stale socket and refuses (leaving it alone) a live
// server's socket, a symlink and a regular file. C 1.2.0 unlinks whatever
// is there.
func TestAPISocketExisting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		make   func(t *testing.T, path string) // creates what is at path
		starts bool                            // ours starts (replacing a stale socket)
	}{
		{"stale", makeStaleSocket, true},
		{"live", makeLiveSocket, false},
		{"symlink", makeSymlink, false},
		{"regular", makeRegular, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			path := filepath.Join(t.TempDir(), "api.sock")
			tc.make(t, path)
			before, _ := os.Lstat(path)
			o := SlirpOptions{Args: []string{"-c", "--api-socket=" + path}}
			if !goImpl() {
				// C: unlinks and binds whatever was there.
				StartSlirpWith(t, g, o)
				checkAPIServes(t, path)
				return
			}
			if tc.starts {
				s := StartSlirpWith(t, g, o)
				checkAPIServes(t, path)
				s.CloseExitFD()
				if _, ok := s.Wait(exitTimeout); !ok {
					t.Fatal("did not exit")
				}
				if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("API socket %s left after exit: %v", path, err)
				}
				return
			}
			res := RunSlirpFail(t, g, o)
			t.Logf("%s at the API socket path: %s; %q", tc.name, exitStatus(res.Err), strings.TrimSpace(lastLine(res.Stderr)))
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
				t.Errorf("%s at %s was changed or removed: %v", tc.name, path, err)
			}
			if !strings.Contains(res.Stderr, path) {
				t.Errorf("error does not name the path: %q", res.Stderr)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// checkAPIServes fails the test unless the API answers at path.
func checkAPIServes(t *testing.T, path string) {
	t.Helper()
	if _, err := testnet.APIRequest(path, `{"execute":"list_hostfwd"}`); err != nil {
		t.Errorf("API at %s: %v", path, err)
	}
}

func makeStaleSocket(t *testing.T, path string) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func makeLiveSocket(t *testing.T, path string) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func makeSymlink(t *testing.T, path string) {
	target := filepath.Join(filepath.Dir(path), "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func makeRegular(t *testing.T, path string) {
	if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAPISocketMode: the API socket is 0600 even under umask 000 (ours);
// C 1.2.0 leaves the mode to the umask. Not parallel: the umask is the
// test process's, inherited by the child it starts.
func TestAPISocketMode(t *testing.T) {
	g := StartGuest(t)
	old := syscall.Umask(0)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	syscall.Umask(old)
	fi, err := os.Lstat(s.APISocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("API socket mode under umask 000: %v", fi.Mode())
	want := fs.FileMode(0o600)
	if !goImpl() {
		want = 0o777 // C: whatever bind(2) makes under the umask
	}
	if fi.Mode().Perm() != want {
		t.Errorf("API socket mode %v, want %v", fi.Mode().Perm(), want)
	}
}

// listenProbes listens on TCP and UDP at addr and counts every connection
// and datagram until the test ends.
func listenProbes(t *testing.T, addr string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		<-done
		<-done
	})
	return &n
}

// TestDisableHostLoopbackAll: with --disable-host-loopback nothing from
// the guest reaches the outer loopback: TCP and UDP through 10.0.2.2 and
// 10.0.2.3 (on a non-DNS port), and raw frames addressed to 127.0.0.1. A
// control datagram to a non-loopback address does arrive, and DNS through
// 10.0.2.3 still works (the man page's caveat).
func TestDisableHostLoopbackAll(t *testing.T) {
	t.Parallel()
	hits := listenProbes(t, hostPort("127.0.0.1", probePortLoopback))
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "--disable-host-loopback")
	control := listenProbes(t, hostPort(addrA, probePortLoopback))
	port := strconv.Itoa(probePortLoopback)
	for _, dst := range []string{"10.0.2.2", "10.0.2.3"} {
		out := GuestTool(t, g, "dial", hostPort(dst, probePortLoopback), "2s")
		t.Logf("tcp %s:%d: %s", dst, probePortLoopback, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
		out = GuestTool(t, g, "udp", hostPort(dst, probePortLoopback), "hello")
		t.Logf("udp %s:%d: %s", dst, probePortLoopback, strings.TrimSpace(out))
	}
	for _, proto := range []string{"udp", "tcp"} {
		GuestTool(t, g, "rawsend", "tap0", "10.0.2.100", "127.0.0.1", proto, port, "3")
	}
	GuestTool(t, g, "rawsend", "tap0", "10.0.2.100", addrA, "udp", port, "3")
	if out := GuestTool(t, g, "dns", "10.0.2.3:53", "udp", testName); !strings.Contains(out, testNameAddr) {
		t.Errorf("DNS through 10.0.2.3 with --disable-host-loopback: %q", out)
	}
	time.Sleep(300 * time.Millisecond)
	got, ctl := hits.Load(), control.Load()
	t.Logf("outer loopback probes reached: %d (want 0); control datagrams to %s: %d", got, addrA, ctl)
	if !goImpl() {
		// C 1.2.0 maps every port of 10.0.2.3 to the resolver's address
		// (127.0.0.1 here): the probes through it arrive.
		t.Logf("C slirp4netns: %d probes reached the outer loopback", got)
	} else if got != 0 {
		t.Errorf("%d connections/datagrams from the guest reached the outer loopback", got)
	}
	if ctl == 0 {
		t.Errorf("the control datagrams to %s did not arrive: the raw sender is broken", addrA)
	}
}

// TestSpoofedSource: frames from the guest whose IPv4 source lies outside
// the guest's network (or is 0.0.0.0, valid only for DHCP) are dropped:
// nothing reaches the outer listener, while the same frames with the
// guest's own source do.
func TestSpoofedSource(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c")
	hits := listenProbes(t, hostPort(addrA, probePortSpoof))
	port := strconv.Itoa(probePortSpoof)
	for _, src := range []string{"192.0.2.99", "10.0.3.100", "127.0.0.1", "0.0.0.0"} {
		for _, proto := range []string{"udp", "tcp"} {
			GuestTool(t, g, "rawsend", "tap0", src, addrA, proto, port, "3")
		}
	}
	time.Sleep(300 * time.Millisecond)
	spoofed := hits.Load()
	GuestTool(t, g, "rawsend", "tap0", "10.0.2.100", addrA, "udp", port, "3")
	GuestTool(t, g, "rawsend", "tap0", "10.0.2.100", addrA, "tcp", port, "1")
	ok := poll(2*time.Second, func() bool { return hits.Load() > spoofed })
	t.Logf("spoofed frames that arrived: %d (want 0); own-source frames arrived: %v", spoofed, ok)
	switch {
	case !goImpl():
		// C 1.2.0 NATs whatever source the guest uses.
		t.Logf("C slirp4netns: %d spoofed-source probes arrived", spoofed)
	case spoofed != 0:
		t.Errorf("%d spoofed-source connections/datagrams reached the outer namespace", spoofed)
	}
	if !ok {
		t.Errorf("frames with the guest's own source did not arrive: the raw sender is broken")
	}
}

// toolRawSend: rawsend IFACE SRC DST udp|tcp PORT COUNT — send COUNT raw
// IPv4 frames (a UDP datagram "probe" or a TCP SYN) from SRC to DST:PORT
// out of IFACE to the gateway's MAC, bypassing the guest's routing.
func toolRawSend(ctx context.Context, args []string) error {
	if err := wantArgs(args, 6, "rawsend IFACE SRC DST udp|tcp PORT COUNT"); err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	src, dst := net.ParseIP(args[1]).To4(), net.ParseIP(args[2]).To4()
	port, err1 := strconv.Atoi(args[4])
	count, err2 := strconv.Atoi(args[5])
	if err := errors.Join(err1, err2); err != nil || src == nil || dst == nil {
		return fmt.Errorf("bad arguments %q: %v", args, err)
	}
	gwMAC, err := gatewayMAC(ctx, "10.0.2.2")
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], gwMAC)
	for i := range count {
		frame := ipv4Frame(gwMAC, ifi.HardwareAddr, src, dst, args[3], uint16(40000+i), uint16(port))
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("sent")
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// gatewayMAC makes the guest's kernel resolve gw (one UDP datagram to the
// discard port) and reads its MAC from the ARP table.
func gatewayMAC(ctx context.Context, gw string) (net.HardwareAddr, error) {
	c, err := net.Dial("udp", hostPort(gw, 9))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for ctx.Err() == nil {
		_, _ = c.Write([]byte("arp"))
		if mac := arpLookup(gw); mac != nil {
			return mac, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no ARP entry for %s", gw)
}

// arpLookup reads ip's complete entry from /proc/net/arp.
func arpLookup(ip string) net.HardwareAddr {
	f, err := os.Open("/proc/net/arp")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 4 && fl[0] == ip && fl[2] == "0x2" {
			mac, err := net.ParseMAC(fl[3])
			if err == nil {
				return mac
			}
		}
	}
	return nil
}

// ipv4Frame builds an Ethernet frame with an IPv4 UDP datagram or TCP SYN,
// with correct checksums.
func ipv4Frame(dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, proto string, sport, dport uint16) []byte {
	var l4 []byte
	var protoNum byte
	if proto == "tcp" {
		protoNum = unix.IPPROTO_TCP
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		binary.BigEndian.PutUint32(l4[4:], 0x01020304) // seq
		l4[12] = 5 << 4                                // data offset
		l4[13] = 0x02                                  // SYN
		binary.BigEndian.PutUint16(l4[14:], 65535)     // window
		binary.BigEndian.PutUint16(l4[16:], ^sum16(pseudoHeader(src, dst, protoNum, len(l4)), l4))
	} else {
		protoNum = unix.IPPROTO_UDP
		payload := []byte("probe")
		l4 = make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], payload)
		binary.BigEndian.PutUint16(l4[6:], ^sum16(pseudoHeader(src, dst, protoNum, len(l4)), l4))
	}
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], sport) // id
	ip[8] = 64
	ip[9] = protoNum
	copy(ip[12:], src)
	copy(ip[16:], dst)
	binary.BigEndian.PutUint16(ip[10:], ^sum16(nil, ip))
	frame := append(append([]byte{}, dstMAC...), srcMAC...)
	frame = append(frame, 0x08, 0x00)
	return append(append(frame, ip...), l4...)
}

func pseudoHeader(src, dst net.IP, proto byte, length int) []byte {
	p := append(append([]byte{}, src...), dst...)
	return append(p, 0, proto, byte(length>>8), byte(length))
}

// sum16 is the ones' complement sum of a and b (RFC 1071), not inverted.
func sum16(a, b []byte) uint16 {
	var s uint32
	for _, buf := range [][]byte{a, b} {
		for i := 0; i+1 < len(buf); i += 2 {
			s += uint32(binary.BigEndian.Uint16(buf[i:]))
		}
		if len(buf)%2 == 1 {
			s += uint32(buf[len(buf)-1]) << 8
		}
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
