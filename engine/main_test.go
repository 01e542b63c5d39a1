package engine

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// mainEnv makes the test binary run Main instead of the tests.
const mainEnv = "_ENGINE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(Main())
	}
	os.Exit(m.Run())
}

// engineProc is an engine process started from the test binary.
type engineProc struct {
	cmd    *exec.Cmd
	conn   *ipc.Conn
	stderr *strings.Builder
	done   chan error
}

func startEngineProc(t *testing.T, env ...string) *engineProc {
	t.Helper()
	conn, peer, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), mainEnv+"=1"), env...)
	cmd.ExtraFiles = []*os.File{peer}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	p := &engineProc{cmd: cmd, conn: conn, stderr: &stderr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		conn.Close()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait returns the exit code, failing after d.
func (p *engineProc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(d):
		t.Fatalf("engine did not exit within %v", d)
		return -1
	}
}

func (p *engineProc) recv(t *testing.T) ipc.Message {
	t.Helper()
	type res struct {
		m   ipc.Message
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, files, err := p.conn.Recv()
		closeFiles(files)
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("recv: %v (stderr: %s)", r.err, p.stderr)
		}
		return r.m
	case <-time.After(10 * time.Second):
		p.cmd.Process.Signal(unix.SIGQUIT)
		time.Sleep(500 * time.Millisecond)
		t.Fatalf("no message from the engine (stderr: %s)", p.stderr)
		return ipc.Message{}
	}
}

// bessPair is a SOCK_SEQPACKET pair standing in for a BESS connection: the
// first end goes to the engine, the second is the "guest".
func bessPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "bess-engine"), os.NewFile(uintptr(fds[1]), "bess-guest")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func startAndReady(t *testing.T, mutate ...func(*policy.Config)) (*engineProc, *os.File) {
	t.Helper()
	p := startEngineProc(t)
	link, guest := bessPair(t)
	cfg := testConfig()
	cfg.DisableDNS = true
	for _, m := range mutate {
		m(&cfg)
	}
	if err := p.conn.SendBody(ipc.TypeEngineStart, 0, proto.EngineStart{Config: cfg, Link: proto.LinkBESS}, link); err != nil {
		t.Fatal(err)
	}
	link.Close()
	if m := p.recv(t); m.Type != ipc.TypeReady {
		t.Fatalf("got %+v, want ready (stderr: %s)", m, p.stderr)
	}
	return p, guest
}

func TestMainProtocol(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testMainProtocol(t) })
	// Under the seccomp filter every request must still work.
	t.Run("seccomp", func(t *testing.T) {
		testMainProtocol(t, func(c *policy.Config) { c.EnableSeccomp = true; c.DisableDNS = false })
	})
}

func testMainProtocol(t *testing.T, mutate ...func(*policy.Config)) {
	p, _ := startAndReady(t, mutate...)
	var cfg policy.Config
	for _, m := range mutate {
		m(&cfg)
	}
	if cfg.EnableSeccomp {
		checkSeccomp(t, p.cmd.Process.Pid)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lf, _ := ln.File()
	ln.Close()
	defer lf.Close()
	steps := []struct {
		typ     string
		fwd     proto.Forward
		file    *os.File
		wantErr bool
	}{
		{ipc.TypeAddForward, proto.Forward{ID: 1, Proto: "tcp", GuestPort: 80}, lf, false},
		{ipc.TypeAddForward, proto.Forward{ID: 1, Proto: "tcp", GuestPort: 80}, lf, true},  // duplicate id
		{ipc.TypeAddForward, proto.Forward{ID: 2, Proto: "tcp", GuestPort: 80}, nil, true}, // no fd
		{ipc.TypeRemoveForward, proto.Forward{ID: 1}, nil, false},
		{ipc.TypeRemoveForward, proto.Forward{ID: 1}, nil, true},
		{"bogus", proto.Forward{}, nil, true},
	}
	for i, s := range steps {
		var files []*os.File
		if s.file != nil {
			files = append(files, s.file)
		}
		seq := uint64(100 + i)
		if err := p.conn.SendBody(s.typ, seq, s.fwd, files...); err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d: %s %+v", i, s.typ, s.fwd)
		m := p.recv(t)
		if m.Type != ipc.TypeReply || m.Seq != seq || (m.Error != "") != s.wantErr {
			t.Fatalf("step %d (%s): reply %+v", i, s.typ, m)
		}
	}
	start := time.Now()
	if err := p.conn.SendBody(ipc.TypeShutdown, 0, nil); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after shutdown (stderr: %s)", code, p.stderr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

func TestMainExitsOnIPCEOF(t *testing.T) {
	p, _ := startAndReady(t)
	p.conn.Close()
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after EOF (stderr: %s)", code, p.stderr)
	}
}

func TestMainLinkClosed(t *testing.T) {
	p, guest := startAndReady(t)
	guest.Close() // the BESS client goes away
	m := p.recv(t)
	if m.Type != ipc.TypeError || !strings.Contains(m.Error, "link closed") {
		t.Fatalf("got %+v, want a link-closed error", m)
	}
	if code := p.wait(t, 5*time.Second); code == 0 {
		t.Fatal("exit code 0 after the link closed")
	}
	if !strings.Contains(p.stderr.String(), "link closed") {
		t.Fatalf("stderr %q does not report the link", p.stderr)
	}
}

func TestMainBadStart(t *testing.T) {
	p := startEngineProc(t)
	if err := p.conn.SendBody(ipc.TypeEngineStart, 0, proto.EngineStart{Config: testConfig()}); err != nil {
		t.Fatal(err)
	}
	if m := p.recv(t); m.Type != ipc.TypeError || m.Error == "" {
		t.Fatalf("got %+v, want an error", m)
	}
	if code := p.wait(t, 5*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}

// checkSeccomp fails unless process pid runs under a seccomp filter.
func checkSeccomp(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "Seccomp:\t2") {
		t.Fatalf("engine not under a seccomp filter:\n%s", status)
	}
}

// TestBusyPollFromEnv: SLIRP4NETNS_GO_BUSY_POLL_US takes whole microseconds
// from 0 to 10000; anything else keeps the default, with a warning.
func TestBusyPollFromEnv(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want time.Duration
		warn bool
	}{
		{"", link.DefaultBusyPoll, false},
		{"0", 0, false},
		{"50", 50 * time.Microsecond, false},
		{"10000", 10 * time.Millisecond, false},
		{"10001", link.DefaultBusyPoll, true},
		{"-1", link.DefaultBusyPoll, true},
		{"1.5", link.DefaultBusyPoll, true},
		{"100us", link.DefaultBusyPoll, true},
		{" 100", link.DefaultBusyPoll, true},
		{"99999999999999999999", link.DefaultBusyPoll, true},
	} {
		var buf strings.Builder
		got := busyPollFromEnv(tc.v, log.New(&buf, "", 0))
		if got != tc.want || (buf.Len() > 0) != tc.warn {
			t.Errorf("%q: %v, warning %q; want %v, warning %v", tc.v, got, buf.String(), tc.want, tc.warn)
		}
		if tc.warn && !strings.Contains(buf.String(), BusyPollEnv) {
			t.Errorf("%q: warning %q does not name %s", tc.v, buf.String(), BusyPollEnv)
		}
	}
}
