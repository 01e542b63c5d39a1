package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc"
)

// fakeEngineEnv makes the re-executed test binary play the engine:
// "fail" reports a start-up error, "exit" dies without a word, "ready"
// reports ready and serves until told to shut down. (Not _SLIRP4NETNS_*:
// childEnv strips those.)
const fakeEngineEnv = "SUPERVISOR_TEST_FAKE_ENGINE"

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
	_, files, err := conn.Recv()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return 2
	}
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
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	// signalReady closes the fd it writes to: give it a copy of its own.
	readyFD, err := unix.Dup(int(readyW.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	readyW.Close()
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
