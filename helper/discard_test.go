package helper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// Rootless podman runs slirp4netns in its user namespace while our network
// namespace is the host's: a thread that joins the container's network
// namespace cannot come back and is discarded. These tests re-execute the
// test binary in that layout (a user namespace of its own over the test's
// network namespace) as the "probe".
const (
	// discardProbeEnv selects the probe: "opentap" runs OpenTap the way
	// the supervisor does, "threads" checks thread creation while a thread
	// is in the foreign namespace.
	discardProbeEnv = "HELPER_TEST_DISCARD_PROBE"
	// noHelperEnv makes the helper process fail at once, so that a probe
	// that succeeds proves the TAP was opened in process.
	noHelperEnv = "HELPER_TEST_NO_HELPER_PROCESS"
)

// runDiscardProbe re-executes the test binary with probe in a new user
// namespace (mapped to root) that keeps the test's network namespace, and
// returns its output.
func runDiscardProbe(t *testing.T, probe string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--user", "--map-root-user", exe, "-test.run=^$")
	// GOMAXPROCS=8: idle Ps make the runtime start threads from whichever
	// thread spawns goroutines, the foreign one included.
	cmd.Env = append(childEnv(os.Environ()), discardProbeEnv+"="+probe, noHelperEnv+"=1", "GOMAXPROCS=8")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe %s: %v\n%s", probe, err, out)
	}
	return string(out)
}

// TestOpenTapDiscardsThread: in podman's layout OpenTap with ThreadMayExit
// opens and configures the TAP without the helper process; afterwards no
// thread of ours is left in the target's namespace (the one that joined it
// exited, and it was not the main thread, which would only be wedged), and
// children started with Pdeathsig from a locked thread (as the supervisor
// starts the engine) are still alive.
func TestOpenTapDiscardsThread(t *testing.T) {
	out := runDiscardProbe(t, "opentap")
	for _, want := range []string{"info {Name:tap0 VnetHdr:true Offloads:7 Created:true}", "inet 10.0.2.100/24",
		"no thread in the target netns", "children alive"} {
		if !strings.Contains(out, want) {
			t.Errorf("probe output lacks %q:\n%s", want, out)
		}
	}
}

// TestOpenTapNoDiscardWithoutOptIn: in the same layout, without
// ThreadMayExit, OpenTap must not open the TAP on a thread it would have to
// discard; here it falls back to the helper process, which the probe
// forbids, so OpenTap fails.
func TestOpenTapNoDiscardWithoutOptIn(t *testing.T) {
	out := runDiscardProbe(t, "optout")
	if !strings.Contains(out, "helper process refused") || !strings.Contains(out, "exit status 3") {
		t.Errorf("probe output: %q, want OpenTap to have tried the helper process", out)
	}
}

// TestSpareThreadNotMain: a thread that may be discarded is never the main
// thread, which the runtime cannot end (it wedges it, runtime.mexit): it
// would stay in the target's namespace for our whole life.
func TestSpareThreadNotMain(t *testing.T) {
	out := runDiscardProbe(t, "spare")
	if !strings.Contains(out, "fn never ran on the main thread") {
		t.Errorf("probe output: %q", out)
	}
}

// TestNoThreadClonedInForeignNetns: while a locked thread sits in the
// target's network namespace, goroutines it starts make the runtime create
// threads; none of them may be in the target's namespace (the runtime
// creates them from its template thread, runtime.newm).
func TestNoThreadClonedInForeignNetns(t *testing.T) {
	out := runDiscardProbe(t, "threads")
	if !strings.Contains(out, "new threads outside the target netns") {
		t.Errorf("probe output: %q", out)
	}
}

// discardProbe is the re-executed test binary's body; it returns the exit
// status.
func discardProbe(probe string) int {
	if probe == "spare" {
		// Before the lock below: the main thread must be free to be picked.
		return report(probeSpareThread())
	}
	// As the supervisor does: children with Pdeathsig are forked from the
	// main goroutine, locked to its thread.
	runtime.LockOSThread()
	var err error
	switch probe {
	case "opentap":
		err = probeOpenTap(true)
	case "optout":
		if err = probeOpenTap(false); err != nil {
			// The expected outcome; the output shows why.
			fmt.Println(err)
			err = nil
		} else {
			err = errors.New("OpenTap worked without the helper process and without ThreadMayExit")
		}
	case "threads":
		err = probeThreads()
	default:
		err = fmt.Errorf("unknown probe %q", probe)
	}
	return report(err)
}

func report(err error) int {
	if err != nil {
		fmt.Println(err)
		return 1
	}
	return 0
}

// probeSpareThread calls onSpareThread from the main goroutine while it is
// on the main thread and not locked: the new goroutine then usually runs
// on the main thread (the caller parks at once), which fn must never see.
func probeSpareThread() error {
	const rounds = 20
	for range rounds {
		if unix.Gettid() != unix.Getpid() {
			continue // the main goroutine moved: this round proves nothing
		}
		var onMain bool
		_, _, _ = onSpareThread(true, func() (*os.File, proto.TapInfo, error) {
			onMain = unix.Gettid() == unix.Getpid()
			return nil, proto.TapInfo{}, nil
		})
		if onMain {
			return errors.New("onSpareThread ran fn on the main thread")
		}
	}
	fmt.Println("fn never ran on the main thread")
	return nil
}

// probeChild starts argv with Pdeathsig SIGKILL from the calling thread.
func probeChild(argv ...string) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// probeTarget starts a process in a new network namespace (owned by our
// user namespace) and returns it once the namespace exists.
func probeTarget() (*exec.Cmd, string, error) {
	cmd, err := probeChild("unshare", "--net", "sleep", "30")
	if err != nil {
		return nil, "", err
	}
	path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	self, _ := os.Readlink("/proc/thread-self/ns/net")
	for range 500 {
		if ns, _ := os.Readlink(path); ns != "" && ns != self {
			return cmd, path, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopChild(cmd)
	return nil, "", errors.New("target namespace not created")
}

func stopChild(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func probeOpenTap(mayExit bool) error {
	if canRejoinOwnNetns() {
		return errors.New("layout wrong: this process can rejoin its network namespace")
	}
	witness, err := probeChild("sleep", "30")
	if err != nil {
		return err
	}
	defer stopChild(witness)
	target, netnsPath, err := probeTarget()
	if err != nil {
		return err
	}
	defer stopChild(target)
	targetNS, _ := os.Readlink(netnsPath)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := proto.HelperConfig{TapName: "tap0", Configure: true, MTU: 1500, CIDR: "10.0.2.0/24"}
	tap, info, err := OpenTap(ctx, Request{NetnsPath: netnsPath, Config: cfg, ThreadMayExit: mayExit})
	if err != nil {
		return fmt.Errorf("OpenTap: %w", err)
	}
	defer tap.Close()
	fmt.Printf("info %+v\n", info)
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(target.Process.Pid), "-n",
		"ip", "-o", "addr", "show", "dev", "tap0").CombinedOutput()
	fmt.Printf("%s", out)
	if err != nil {
		return fmt.Errorf("ip addr in target: %w", err)
	}
	// The discarded thread exits shortly after it handed the TAP over.
	var in []string
	for range 200 {
		if in = threadsIn(targetNS); len(in) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(in) != 0 {
		return fmt.Errorf("threads %v still in the target netns %s", in, targetNS)
	}
	fmt.Println("no thread in the target netns")
	for _, c := range []*exec.Cmd{witness, target} {
		if st := procState(c.Process.Pid); st != "S" && st != "R" {
			return fmt.Errorf("child %v is in state %q: its parent-death signal fired", c.Args, st)
		}
	}
	fmt.Println("children alive")
	return nil
}

// probeThreads makes the runtime create threads while one locked thread is
// in the target's namespace, and checks where the new threads are.
func probeThreads() error {
	target, netnsPath, err := probeTarget()
	if err != nil {
		return err
	}
	defer stopChild(target)
	targetNS, _ := os.Readlink(netnsPath)
	ns, err := os.Open(netnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	var report error
	_, _, err = onSpareThread(true, func() (*os.File, proto.TapInfo, error) {
		return inNetns(ns, func() (*os.File, proto.TapInfo, error) {
			report = threadsWhileForeign(targetNS)
			return nil, proto.TapInfo{}, nil
		})
	})
	if err != nil {
		return err
	}
	return report
}

// threadsWhileForeign runs on the thread in targetNS: it starts goroutines
// that block in system calls, which needs new threads, and checks that
// every thread but this one is outside targetNS.
func threadsWhileForeign(targetNS string) error {
	self := strconv.Itoa(unix.Gettid())
	before := len(threadIDs())
	const blockers = 16
	pipes := make([][2]int, blockers)
	started := make(chan struct{}, blockers)
	done := make(chan struct{}, blockers)
	for i := range pipes {
		if err := unix.Pipe2(pipes[i][:], unix.O_CLOEXEC); err != nil {
			return err
		}
		go func(fd int) {
			started <- struct{}{}
			var b [1]byte
			_, _ = unix.Read(fd, b[:]) // blocks its thread until written
			done <- struct{}{}
		}(pipes[i][0])
	}
	for range blockers {
		<-started
	}
	time.Sleep(200 * time.Millisecond) // sysmon hands blocked threads' Ps on
	in := threadsIn(targetNS)
	after := len(threadIDs())
	for i := range pipes {
		_, _ = unix.Write(pipes[i][1], []byte{1})
	}
	for range blockers {
		<-done
	}
	for i := range pipes {
		unix.Close(pipes[i][0])
		unix.Close(pipes[i][1])
	}
	if len(in) != 1 || in[0] != self {
		return fmt.Errorf("threads in the target netns: %v, want only %s", in, self)
	}
	if after <= before {
		return fmt.Errorf("no thread was created (%d before, %d after): the probe tested nothing", before, after)
	}
	fmt.Printf("%d new threads outside the target netns\n", after-before)
	return nil
}

// threadIDs lists this process's threads.
func threadIDs() []string {
	ents, _ := os.ReadDir("/proc/self/task")
	ids := make([]string, 0, len(ents))
	for _, e := range ents {
		ids = append(ids, e.Name())
	}
	return ids
}

// threadsIn lists the threads of this process in network namespace ns
// (as readlink of an ns file shows it).
func threadsIn(ns string) []string {
	var in []string
	for _, id := range threadIDs() {
		if l, err := os.Readlink("/proc/self/task/" + id + "/ns/net"); err == nil && l == ns {
			in = append(in, id)
		}
	}
	return in
}

// procState is the state letter of process pid ("Z" for a zombie).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "gone"
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "?"
	}
	return s[i+2 : i+3]
}
