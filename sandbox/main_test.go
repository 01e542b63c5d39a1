//go:build linux && cgo

package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// The tests re-execute the test binary in one of these roles, chosen by
// childEnv. The sandbox constructor runs in the test binary too (it is in
// this package), so a child started with ModeEnv=engine and SandboxEnv=1 is
// a sandboxed engine as far as this package is concerned.
const (
	childEnv = "_SANDBOX_TEST_CHILD"
	// setupEnv: "file:<path>" binds path over /etc/resolv.conf, and
	// "symlink:<path>" mounts the symlink path itself there, before the
	// setup child re-executes itself with setupExecEnv (';'-separated
	// KEY=VALUE) added to its environment.
	setupEnv     = "_SANDBOX_TEST_SETUP"
	setupExecEnv = "_SANDBOX_TEST_EXEC_ENV"
	// dialEnv: the loopback TCP address the sockets child dials.
	dialEnv = "_SANDBOX_TEST_DIAL"
)

// Child roles.
const (
	roleSetup    = "setup"
	roleSelfTest = "selftest"
	roleSockets  = "sockets"
	roleLight    = "light"
	// roleActive prints whether the constructor entered the sandbox.
	roleActive = "active"
	// roleLightExec applies the light filter, then re-executes itself with
	// setupExecEnv: the sandbox constructor must then fail cleanly.
	roleLightExec = "light-exec"
)

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		goleak.VerifyTestMain(m)
	case roleSetup:
		os.Exit(setupChild())
	case roleSelfTest:
		os.Exit(selfTestChild())
	case roleSockets:
		os.Exit(socketsChild())
	case roleLight:
		os.Exit(lightChild())
	case roleActive:
		fmt.Printf("active=%v\n", Active())
		os.Exit(0)
	case roleLightExec:
		os.Exit(lightExecChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}

// setupChild runs in a mount namespace of its own (made by the parent
// test), replaces /etc/resolv.conf there, and re-executes itself as the
// sandboxed child.
func setupChild() int {
	kind, path, _ := strings.Cut(os.Getenv(setupEnv), ":")
	var err error
	switch kind {
	case "file":
		err = unix.Mount(path, "/etc/resolv.conf", "", unix.MS_BIND, "")
	case "symlink":
		err = mountSymlink(path, "/etc/resolv.conf")
	case "none":
	default:
		err = fmt.Errorf("unknown setup %q", kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "setup: %v\n", err)
		return 2
	}
	env := withEnv(os.Environ(), strings.Split(os.Getenv(setupExecEnv), ";")...)
	exe, err := os.Executable()
	if err == nil {
		err = unix.Exec(exe, os.Args, env)
	}
	fmt.Fprintf(os.Stderr, "setup: exec: %v\n", err)
	return 2
}

// withEnv returns env with each KEY=VALUE of set replacing any earlier
// value of KEY (getenv returns the first match, so appending is not enough).
func withEnv(env []string, set ...string) []string {
	keys := map[string]bool{}
	for _, kv := range set {
		if k, _, ok := strings.Cut(kv, "="); ok {
			keys[k] = true
		}
	}
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !keys[k] {
			out = append(out, kv)
		}
	}
	for _, kv := range set {
		if kv != "" {
			out = append(out, kv)
		}
	}
	return out
}

// mountSymlink mounts the symlink at link itself (not its target) on
// target, which mount(2) cannot do.
func mountSymlink(link, target string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, link,
		unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", link, err)
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount onto %s: %w", target, err)
	}
	return nil
}

// selfTestChild is the sandboxed engine stand-in: it checks the sandbox,
// applies the filter, runs SelfTest, then waits for a line on stdin and
// prints resolv.conf again so the parent can check that a change made on
// the host is visible.
func selfTestChild() int {
	if !Active() {
		fmt.Println("FAIL sandbox not active")
		return 1
	}
	if err := Verify(); err != nil {
		fmt.Printf("FAIL verify: %v\n", err)
		return 1
	}
	fmt.Println("INFO verify ok")
	if err := ApplySeccomp(); err != nil {
		fmt.Printf("FAIL seccomp: %v\n", err)
		return 1
	}
	// Verify must work under the filter too (the engine may call it late).
	if err := Verify(); err != nil {
		fmt.Printf("FAIL verify under seccomp: %v\n", err)
		return 1
	}
	_ = SelfTest(os.Stdout)
	fmt.Println("INFO waiting")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Printf("FAIL read stdin: %v\n", err)
		return 1
	}
	fmt.Printf("INFO resolv.conf-after %s\n", ResolvFirstLine())
	return 0
}

// socketsChild applies the engine filter without the sandbox and uses what
// the engine uses: goroutines, GC, timers, TCP to a loopback listener of the
// parent, UDP, an ICMP echo socket, netlink (net.Interfaces), readv/writev
// on a socketpair made before the filter, resolv.conf.
func socketsChild() int {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Printf("FAIL socketpair: %v\n", err)
		return 1
	}
	if err := ApplySeccomp(); err != nil {
		fmt.Printf("FAIL seccomp: %v\n", err)
		return 1
	}
	failed := 0
	for _, c := range socketChecks(pair) {
		if err := c.run(); err != nil {
			fmt.Printf("FAIL %s: %v\n", c.name, err)
			failed++
			continue
		}
		fmt.Printf("OK %s\n", c.name)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

type check struct {
	name string
	run  func() error
}

func socketChecks(pair [2]int) []check {
	return []check{
		{"tcp dial", func() error { return dialTCP(os.Getenv(dialEnv)) }},
		{"udp loopback", udpLoopback},
		{"udp6 loopback", udp6Loopback},
		{"icmp echo socket", icmpSocket},
		{"net.Interfaces", func() error {
			ifs, err := net.Interfaces()
			if err == nil && len(ifs) == 0 {
				err = errors.New("no interfaces")
			}
			return err
		}},
		{"interface addrs", func() error { _, err := net.InterfaceAddrs(); return err }},
		{"readv/writev", func() error { return seqpacketIO(pair) }},
		{"read resolv.conf", func() error { _, err := os.ReadFile("/etc/resolv.conf"); return err }},
		{"goroutines+gc+timers", goroutinesGC},
		{"new threads", newThreads},
		{"verify off", func() error {
			if Verify() == nil {
				return errors.New("Verify succeeded outside the sandbox")
			}
			return nil
		}},
		{"fork denied", func() error {
			_, err := syscall.ForkExec("/bin/true", []string{"true"}, nil)
			if err == nil {
				return errors.New("fork+exec succeeded")
			}
			return nil
		}},
	}
}

func dialTCP(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "pong\n" {
		return fmt.Errorf("got %q", line)
	}
	return nil
}

func udpLoopback() error { return udpEcho("udp4", "127.0.0.1:0") }

func udp6Loopback() error {
	// ::1 may be missing on hosts with IPv6 disabled; the engine's -6 needs
	// the same syscalls as IPv4, so only the socket matters then.
	err := udpEcho("udp6", "[::1]:0")
	if err != nil && strings.Contains(err.Error(), "cannot assign") {
		return nil
	}
	return err
}

func udpEcho(network, addr string) error {
	a, err := net.ListenPacket(network, addr)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := net.DialUDP(network, nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.Write([]byte("x")); err != nil {
		return err
	}
	if err := a.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, _, err := a.ReadFrom(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "x" {
		return fmt.Errorf("got %q", buf[:n])
	}
	return nil
}

// icmpSocket: the kernel may refuse ICMP echo sockets (ping_group_range)
// with EACCES; the filter must not be the one refusing (EPERM).
func icmpSocket() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err == nil {
		return unix.Close(fd)
	}
	if errors.Is(err, unix.EPERM) {
		return err
	}
	return nil
}

func seqpacketIO(pair [2]int) error {
	if _, err := unix.Writev(pair[0], [][]byte{[]byte("ab"), []byte("cd")}); err != nil {
		return fmt.Errorf("writev: %w", err)
	}
	a, b := make([]byte, 2), make([]byte, 8)
	n, err := unix.Readv(pair[1], [][]byte{a, b})
	if err != nil {
		return fmt.Errorf("readv: %w", err)
	}
	if n != 4 || string(a)+string(b[:2]) != "abcd" {
		return fmt.Errorf("readv got %d bytes", n)
	}
	return nil
}

func goroutinesGC() error {
	done := make(chan int, 64)
	for i := range 64 {
		go func() {
			b := make([]byte, 1<<16)
			time.Sleep(time.Millisecond)
			done <- len(b) + i
		}()
	}
	for range 64 {
		<-done
	}
	for range 3 {
		runtime.GC()
	}
	t := time.NewTimer(10 * time.Millisecond)
	<-t.C
	return nil
}

// newThreads makes the runtime create OS threads under the filter: each
// goroutine locks its thread, blocks in a syscall, and exits locked, which
// destroys the thread (glibc tries clone3, gets ENOSYS, uses clone).
func newThreads() error {
	const n = 8
	tids := make(chan int, n)
	for range n {
		go func() {
			runtime.LockOSThread()
			ts := unix.NsecToTimespec(int64(20 * time.Millisecond))
			_ = unix.Nanosleep(&ts, nil)
			tids <- unix.Gettid()
		}()
	}
	seen := map[int]bool{}
	for range n {
		seen[<-tids] = true
	}
	if len(seen) != n {
		return fmt.Errorf("%d distinct threads, want %d", len(seen), n)
	}
	return nil
}

// lightChild applies the light filter and checks that a denied call fails
// and an ordinary one works.
func lightChild() int {
	if err := ApplyLightSeccomp(); err != nil {
		fmt.Printf("FAIL light seccomp: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "light")
	if err != nil {
		fmt.Printf("FAIL mkdir: %v\n", err)
		return 1
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, ""); !errors.Is(err, unix.EPERM) {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		fmt.Printf("FAIL mount: %v\n", err)
		return 1
	}
	if err := unix.PtraceAttach(os.Getppid()); !errors.Is(err, unix.EPERM) {
		fmt.Printf("FAIL ptrace: %v\n", err)
		return 1
	}
	if _, err := os.ReadFile("/etc/resolv.conf"); err != nil {
		fmt.Printf("FAIL read: %v\n", err)
		return 1
	}
	fmt.Println("OK light")
	return 0
}

func lightExecChild() int {
	if err := ApplyLightSeccomp(); err != nil {
		fmt.Printf("FAIL light seccomp: %v\n", err)
		return 1
	}
	env := withEnv(os.Environ(), strings.Split(os.Getenv(setupExecEnv), ";")...)
	exe, err := os.Executable()
	if err == nil {
		err = unix.Exec(exe, os.Args, env)
	}
	fmt.Printf("FAIL exec: %v\n", err)
	return 1
}
