// Package integration holds the end-to-end tests of slirp4netns: they run the
// binary named by $SLIRP4NETNS_BIN (default: the repository's
// bin/slirp4netns) for real network namespaces and check what a guest sees.
//
// The test binary re-executes itself (rootlesskit's pkg/port/testsuite
// style). Stages, chosen by $SLIRPTEST_STAGE:
//
//	""      the process go test started: for each variant (root, rootless)
//	        it starts "unshare --user --map-root-user --net --mount --pid
//	        --fork --mount-proc" (after setpriv to uid 65534 for rootless)
//	        running this binary as "init";
//	"init"  PID 1 of that namespace: starts "inner" and reaps orphans; when
//	        it exits the kernel kills everything the tests left;
//	"inner" sets up the outer "host" namespace (lo, veth addresses, a DNS
//	        server on 127.0.0.1:53 with /etc/resolv.conf bind-mounted to it,
//	        echo/HTTP/peer servers) and runs the tests;
//	"tool"  a small client or server run inside a guest with nsenter.
//
// No traffic can leave the machine: everything runs in namespaces created
// here, whose only interfaces are lo, a veth pair with TEST-NET addresses
// and the TAPs slirp4netns creates.
package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// Environment variables of the harness.
const (
	// envBin names the slirp4netns binary under test.
	envBin = "SLIRP4NETNS_BIN"
	// envImpl says which implementation envBin is: "go" (default, ours) or
	// "c" (the reference C slirp4netns 1.2.0). It selects the expected
	// behaviour where our design deliberately differs; see goImpl.
	envImpl = "SLIRP4NETNS_IMPL"
	// envVariants lists the privilege variants to run, comma-separated
	// ("root,rootless"; default: both as root, rootless otherwise).
	envVariants = "SLIRPTEST_VARIANTS"
	envStage    = "SLIRPTEST_STAGE"
	envVariant  = "SLIRPTEST_VARIANT"
	// envMark is set in the environment of every slirp4netns the tests start,
	// with a value unique to that instance, so that the leftover check can
	// find its descendants.
	envMark = "SLIRPTEST_MARK"
)

// nobody is the uid/gid of the rootless variant.
const nobody = "65534"

func TestMain(m *testing.M) {
	switch os.Getenv(envStage) {
	case "tool":
		os.Exit(runTool(os.Args[1:]))
	case "init":
		os.Exit(runInit())
	case "inner":
		os.Exit(runInner(m))
	default:
		os.Exit(runVariants())
	}
}

// goImpl reports whether the binary under test is ours. Where our design
// deliberately differs from C slirp4netns 1.2.0, tests assert the behaviour
// of the implementation under test, decided by this plain environment
// setting (never a skip).
func goImpl() bool { return os.Getenv(envImpl) != "c" }

// slirpBin returns the absolute path of the binary under test.
func slirpBin() (string, error) {
	p := os.Getenv(envBin)
	if p == "" {
		p = "../../bin/slirp4netns"
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s %q: %w", envBin, p, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("binary under test (%s, run 'make build'): %w", envBin, err)
	}
	return abs, nil
}

// runVariants is the top stage: it runs the whole suite once per privilege
// variant, each in a fresh outer namespace, and fails if any variant fails.
func runVariants() int {
	bin, err := slirpBin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	variants := os.Getenv(envVariants)
	if variants == "" {
		variants = "root,rootless"
		if os.Geteuid() != 0 {
			variants = "rootless"
		}
	}
	list := strings.Split(variants, ",")
	args := splitTimeout(os.Args[1:], len(list))
	failed := 0
	for _, v := range list {
		fmt.Printf("=== VARIANT %s: %s=%s %s=%s\n", v, envBin, bin, envImpl, implName())
		code, err := runVariant(v, bin, args)
		if err != nil {
			fmt.Fprintf(os.Stderr, "=== VARIANT %s: %v\n", v, err)
			code = 1
		}
		fmt.Printf("=== VARIANT %s: exit status %d\n", v, code)
		if code != 0 {
			failed++
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func implName() string {
	if goImpl() {
		return "go"
	}
	return "c"
}

// unshareOuter is the command line that creates the outer namespace.
var unshareOuter = []string{"unshare", "--user", "--map-root-user", "--net", "--mount",
	"--pid", "--fork", "--mount-proc", "--kill-child"}

// runVariant runs the suite in one outer namespace and returns its exit code.
func runVariant(variant, bin string, args []string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("find test binary: %w", err)
	}
	var argv []string
	env := os.Environ()
	dir := ""
	var attr *syscall.SysProcAttr
	switch variant {
	case "root":
		argv = append(append([]string{}, unshareOuter...), self)
		if os.Geteuid() == 0 {
			// A wider uid/gid map, so that the client tests have an
			// unprivileged user (see clients_test.go).
			if argv, attr, err = clientOuter(argv); err != nil {
				return 1, err
			}
		}
	case "rootless":
		if os.Geteuid() == 0 {
			if err := ensureTunOpen(); err != nil {
				return 1, err
			}
			dir, err = stageRootless(self, bin)
			if err != nil {
				return 1, err
			}
			defer os.RemoveAll(dir)
			self, bin = filepath.Join(dir, "integration.test"), filepath.Join(dir, "slirp4netns")
			argv = append([]string{"setpriv", "--reuid=" + nobody, "--regid=" + nobody, "--clear-groups"}, unshareOuter...)
			argv = append(argv, self)
			env = withEnv(env, "HOME", "/tmp") // the rootless user owns nothing else
		} else {
			argv = append(append([]string{}, unshareOuter...), self)
		}
	default:
		return 1, fmt.Errorf("unknown variant %q in %s (want root or rootless)", variant, envVariants)
	}
	if attr == nil {
		// This outer namespace maps one uid: no unprivileged user there
		// for rootlesskit and podman (see clients_test.go).
		args = append(append([]string{}, args...), "-test.skip="+clientTestsPattern)
	}
	argv = append(argv, childArgs(args)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	for k, v := range map[string]string{envStage: "init", envVariant: variant, envBin: bin, envImpl: implName()} {
		env = withEnv(env, k, v)
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = attr
	err = cmd.Run()
	if code, ok := exitCode(err); ok {
		return code, nil
	}
	return 1, fmt.Errorf("run %v: %w", argv, err)
}

// splitTimeout gives each of n sequential variant runs an equal share of
// -test.timeout, so that together they finish before the go command's own
// deadline (the timeout plus a minute) kills the whole run.
func splitTimeout(args []string, n int) []string {
	out := append([]string{}, args...)
	for i, a := range out {
		v, ok := strings.CutPrefix(a, "-test.timeout=")
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err == nil && d > 0 && n > 1 {
			out[i] = "-test.timeout=" + (d / time.Duration(n)).String()
		}
	}
	return out
}

// childArgs filters the go test flags for the re-executed suite: the files
// the go command wants written (test log, coverage, profiles) would be
// written twice, and not at all by the rootless variant. Without the test
// log the go command does not cache the result, which is right: it depends
// on the binary under test.
func childArgs(args []string) []string {
	drop := []string{"-test.testlogfile", "-test.gocoverdir", "-test.coverprofile",
		"-test.cpuprofile", "-test.memprofile", "-test.blockprofile", "-test.mutexprofile",
		"-test.trace", "-test.outputdir", "-test.fuzzcachedir"}
	var out []string
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		name = "-" + strings.TrimLeft(name, "-")
		dropped := false
		for _, d := range drop {
			if name == d {
				dropped = true
			}
		}
		if !dropped {
			out = append(out, a)
		}
	}
	return out
}

// ensureTunOpen makes /dev/net/tun usable by unprivileged users (mode 666),
// as DESIGN.md's "Running tests unprivileged" requires; distributions that
// ship it 600 need this once per boot.
func ensureTunOpen() error {
	const tun = "/dev/net/tun"
	st, err := os.Stat(tun)
	if err != nil {
		return fmt.Errorf("stat %s: %w", tun, err)
	}
	if st.Mode().Perm()&0o006 == 0o006 {
		return nil
	}
	if err := os.Chmod(tun, st.Mode().Perm()|0o666); err != nil {
		return fmt.Errorf("chmod 666 %s for the rootless variant: %w", tun, err)
	}
	return nil
}

// stageRootless copies the test binary and the binary under test into a new
// 0755 directory, since the checkout may not be readable by others.
func stageRootless(self, bin string) (string, error) {
	dir, err := os.MkdirTemp("", "slirptest-")
	if err != nil {
		return "", fmt.Errorf("stage rootless run: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("stage rootless run: %w", err)
	}
	for src, name := range map[string]string{self: "integration.test", bin: "slirp4netns"} {
		if err := copyFile(src, filepath.Join(dir, name), 0o755); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("stage rootless run: %w", err)
		}
	}
	return dir, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode) // umask may have removed bits
}

// exitCode extracts the exit code of a finished command (128+signal when it
// was killed); ok is false when the command could not be run at all.
func exitCode(err error) (code int, ok bool) {
	if err == nil {
		return 0, true
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	if ws, isWS := ee.Sys().(syscall.WaitStatus); isWS && ws.Signaled() {
		return 128 + int(ws.Signal()), true
	}
	return ee.ExitCode(), true
}

// runInit is PID 1 of the outer namespace: it starts the inner stage, passes
// SIGINT/SIGTERM on to it, reaps every orphan reparented to it, and returns
// the inner stage's exit code. Returning ends the namespace and so kills
// any process a test left behind.
func runInit() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		return 1
	}
	// Guard against runaway recursion: only PID 1 of a new namespace may be
	// init, and its child must see stage "inner" (os.StartProcess does not
	// deduplicate the environment, hence withEnv).
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: not PID 1 of a new PID namespace")
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	env := withEnv(os.Environ(), envStage, "inner")
	p, err := os.StartProcess(self, os.Args, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "init: start inner stage:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = p.Signal(s)
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "init: wait:", err)
			return 1
		}
		if pid != p.Pid {
			continue // an orphan: reaped, nothing else to do
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// withEnv returns env with key set to value, replacing any earlier value.
func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// runInner sets up the outer namespace and runs the tests in it.
func runInner(m *testing.M) int {
	if os.Getppid() != 1 {
		fmt.Fprintln(os.Stderr, "integration: the inner stage must be started by init")
		return 1
	}
	o, err := setupOuter()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: set up outer namespace:", err)
		return 1
	}
	code := m.Run()
	if err := o.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: tear down outer namespace:", err)
		code = max(code, 1)
	}
	// Every helper goroutine (process waiters, output readers, servers)
	// must be gone once the tests and the outer services have ended.
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: leaked goroutines:", err)
		code = max(code, 1)
	}
	return code
}

// run runs a set-up command and returns its error with its output.
func run(args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
