package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/sandbox"
)

// capNetBindService is the capability set the sandboxed engine keeps.
const capNetBindService = 1 << 10

// mustBeDenied are the self-test actions that a confined engine must fail
// (issue: "--enable-sandbox and --enable-seccomp").
var mustBeDenied = []string{"execve", "ptrace", "mount", "unshare", "kill", "read /proc/"}

// TestConfinement: from inside an engine started with --enable-sandbox
// --enable-seccomp, exec, ptrace, mount, unshare, kill of another process,
// reading the supervisor's environ and opening files outside /etc and /run
// all fail; only CAP_NET_BIND_SERVICE is left; the network still works.
func TestConfinement(t *testing.T) {
	t.Parallel()
	if !goOnly(t) {
		return
	}
	g := StartGuest(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := StartSlirpWith(t, g, SlirpOptions{
		Args: []string{"-c", "--enable-sandbox", "--enable-seccomp"},
		API:  true,
		Env:  []string{sandbox.SelfTestEnv + "=1", sandbox.SelfTestFilesEnv + "=" + secret},
	})
	GuestTool(t, g, "echo", "tcp", gwEcho, "10000")

	report := s.Stderr.String()
	denied, allowed, _, err := sandbox.ParseSelfTest(strings.NewReader(report))
	if err != nil {
		t.Fatalf("parse self-test report: %v\n%s", err, report)
	}
	if len(allowed) > 0 {
		t.Errorf("the confined engine could: %v\n%s", allowed, report)
	}
	for _, want := range mustBeDenied {
		if !slices.ContainsFunc(denied, func(d string) bool { return strings.HasPrefix(d, want) }) {
			t.Errorf("self-test did not show %q denied: denied=%v", want, denied)
		}
	}
	if !slices.ContainsFunc(denied, func(d string) bool { return strings.Contains(d, secret) }) {
		t.Errorf("self-test did not show the open of %s denied: denied=%v", secret, denied)
	}
	engine := enginePID(t, s.PID())
	if capEff := procCapEff(t, engine); capEff != capNetBindService {
		t.Errorf("engine CapEff = %#x, want only CAP_NET_BIND_SERVICE (%#x)", capEff, capNetBindService)
	}
}

// enginePID returns the one child process of the supervisor pid (the
// helper has exited by the time slirp4netns is ready).
func enginePID(t *testing.T, pid int) int {
	t.Helper()
	var children []string
	waitFor(t, 5*time.Second, "the engine process", func() bool {
		children = childPIDs(pid)
		return len(children) == 1
	})
	n, err := strconv.Atoi(children[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// childPIDs lists the children of pid; each thread has its own list, and
// a Go program starts children from any of its threads.
func childPIDs(pid int) []string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

// procCapEff reads CapEff from /proc/PID/status.
func procCapEff(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no CapEff in /proc/%d/status", pid)
	return 0
}
