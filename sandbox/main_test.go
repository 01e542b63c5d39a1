//go:build linux && cgo

package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
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
	// roleSandboxOnly is roleSelfTest without the seccomp filter.
	roleSandboxOnly = "sandbox-only"
	roleSockets     = "sockets"
	roleLight       = "light"
	// roleSocketsLibseccomp and roleLightLibseccomp are roleSockets and
	// roleLight with the filters built by libseccomp at run time (the
	// path of architectures without precompiled programs).
	roleSocketsLibseccomp = "sockets-libseccomp"
	roleLightLibseccomp   = "light-libseccomp"
	// roleICMP runs in a network namespace of its own, allows ICMP echo
	// sockets there and pings 127.0.0.1 under the filter.
	roleICMP = "icmp"
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
		os.Exit(exitStatus(selfTestChild(true)))
	case roleSandboxOnly:
		os.Exit(exitStatus(selfTestChild(false)))
	case roleSockets:
		os.Exit(exitStatus(socketsChild()))
	case roleLight:
		os.Exit(exitStatus(lightChild()))
	case roleSocketsLibseccomp:
		enginePrecompiled = nil
		os.Exit(exitStatus(socketsChild()))
	case roleLightLibseccomp:
		lightPrecompiled = nil
		os.Exit(exitStatus(lightChild()))
	case roleICMP:
		os.Exit(exitStatus(icmpChild()))
	case roleActive:
		fmt.Printf("active=%v\n", Active())
		os.Exit(0)
	case roleLightExec:
		os.Exit(exitStatus(lightExecChild()))
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}

// exitStatus prints a child's failure as the "FAIL <what>: <why>" line
// that the parent test shows, and returns the child's exit status.
func exitStatus(err error) int {
	if err != nil {
		fmt.Printf("FAIL %v\n", err)
		return 1
	}
	return 0
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
	case "propagate":
		// Mount first now and second when the parent says so, from this
		// (shared) namespace while the sandboxed child runs.
		first, second, _ := strings.Cut(path, ",")
		if err := unix.Mount(first, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
			fmt.Fprintf(os.Stderr, "setup: %v\n", err)
			return 2
		}
		if err := unix.Mount("", "/", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
			fmt.Fprintf(os.Stderr, "setup: make / shared: %v\n", err)
			return 2
		}
		return propagateChild(second)
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

// propagateChild runs the sandboxed child, relays the parent's go-ahead
// line to it after mounting second on /etc/resolv.conf, and returns its
// exit status.
func propagateChild(second string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "setup: %v\n", err)
		return 2
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = withEnv(os.Environ(), strings.Split(os.Getenv(setupExecEnv), ";")...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	in, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "setup: %v\n", err)
		return 2
	}
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if err := unix.Mount(second, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		fmt.Fprintf(os.Stderr, "setup: mount over resolv.conf: %v\n", err)
	}
	io.WriteString(in, line)
	in.Close()
	if err := cmd.Wait(); err != nil {
		fmt.Fprintf(os.Stderr, "setup: child: %v\n", err)
		return 1
	}
	return 0
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
func selfTestChild(withSeccomp bool) error {
	if !Active() {
		return errors.New("sandbox not active")
	}
	if err := Confine(true, withSeccomp); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	fmt.Println("INFO verify ok")
	if withSeccomp {
		// Verify must work under the filter too (the engine may call it late).
		if err := Verify(); err != nil {
			return fmt.Errorf("verify under seccomp: %w", err)
		}
	}
	_ = SelfTest(os.Stdout)
	// The engine's work still works in the sandbox: host sockets (the
	// engine stays in the host network namespace), netlink.
	for _, c := range sandboxedNetChecks() {
		if err := c.run(); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		fmt.Printf("INFO net-%s ok\n", strings.ReplaceAll(c.name, " ", "-"))
	}
	_, err := os.Stat("/run")
	fmt.Printf("INFO run-visible %v\n", err == nil)
	fmt.Println("INFO waiting")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	fmt.Printf("INFO resolv.conf-after %s\n", ResolvFirstLine())
	return nil
}

// socketsChild applies the engine filter without the sandbox and uses what
// the engine uses: goroutines, GC, timers, TCP to a loopback listener of the
// parent, UDP, an ICMP echo socket, netlink (net.Interfaces), readv/writev
// on a socketpair made before the filter, resolv.conf.
func socketsChild() error {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	// Made before the filter, as the supervisor makes forwards' listeners.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		return fmt.Errorf("listener file: %w", err)
	}
	defer lnFile.Close()
	if err := applyEngineFilter(); err != nil {
		return err
	}
	failed := 0
	for _, c := range append(socketChecks(pair), listenerChecks(lnFile)...) {
		if err := c.run(); err != nil {
			fmt.Printf("FAIL %s: %v\n", c.name, err)
			failed++
			continue
		}
		fmt.Printf("OK %s\n", c.name)
	}
	if failed > 0 {
		return fmt.Errorf("%d of the checks", failed)
	}
	return nil
}

// applyEngineFilter installs the engine filter as Confine does, except
// that a precompiled program must load without falling back to libseccomp
// (this kernel has what it needs), so the fast path is what is tested.
func applyEngineFilter() error {
	if enginePrecompiled == nil {
		if err := Confine(false, true); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
		fmt.Println("INFO filter libseccomp")
		return nil
	}
	if err := loadPrecompiled(enginePrecompiled.instantiate(os.Getpid()), true); err != nil {
		return fmt.Errorf("precompiled seccomp: %w", err)
	}
	fmt.Println("INFO filter precompiled")
	return nil
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

// listenerChecks: accepting on a listener made before the filter and handed
// over as a file (as the supervisor hands forwards to the engine) works,
// making a new one does not.
func listenerChecks(f *os.File) []check {
	return []check{
		{"accept on a handed-over listener", func() error {
			ln, err := net.FileListener(f)
			if err != nil {
				return err
			}
			defer ln.Close()
			errc := make(chan error, 1)
			go func() {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
				if err == nil {
					c.Close()
				}
				errc <- err
			}()
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			c.Close()
			return <-errc
		}},
		{"listen denied", func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				l.Close()
				return errors.New("listen succeeded")
			}
			if !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("listen: %w, want EPERM", err)
			}
			return nil
		}},
	}
}

// sandboxedNetChecks are the socket checks that also run in the sandbox.
func sandboxedNetChecks() []check {
	return []check{
		{"tcp dial", func() error { return dialTCP(os.Getenv(dialEnv)) }},
		{"udp", udpLoopback},
		{"interfaces", func() error { _, err := net.Interfaces(); return err }},
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
func lightChild() error {
	if lightPrecompiled != nil {
		// The precompiled program must load without falling back.
		if err := loadPrecompiled(lightPrecompiled.instantiate(0), false); err != nil {
			return fmt.Errorf("precompiled light seccomp: %w", err)
		}
	} else if err := ApplyLightSeccomp(); err != nil {
		return fmt.Errorf("light seccomp: %w", err)
	}
	dir, err := os.MkdirTemp("", "light")
	if err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, ""); !errors.Is(err, unix.EPERM) {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("mount: %v, want EPERM", err)
	}
	if err := unix.PtraceAttach(os.Getppid()); !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("ptrace: %v, want EPERM", err)
	}
	if _, err := os.ReadFile("/etc/resolv.conf"); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Println("OK light")
	return nil
}

func lightExecChild() error {
	if err := ApplyLightSeccomp(); err != nil {
		return fmt.Errorf("light seccomp: %w", err)
	}
	env := withEnv(os.Environ(), strings.Split(os.Getenv(setupExecEnv), ";")...)
	exe, err := os.Executable()
	if err == nil {
		err = unix.Exec(exe, os.Args, env)
	}
	return fmt.Errorf("exec: %w", err)
}

// icmpChild: in its own network namespace (root there), it brings lo up and
// opens ping_group_range to its gid 0 (the only one mapped), then pings 127.0.0.1 through an unprivileged ICMP
// socket under the engine filter, as the engine's ping relay does.
func icmpChild() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
		return fmt.Errorf("ping_group_range: %w", err)
	}
	if err := loUp(); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := ApplySeccomp(); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	if err := ping4(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	fmt.Println("OK ping")
	return nil
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// ping4 sends one ICMP echo request to 127.0.0.1 and waits for the reply.
func ping4() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	// Type 8 (echo request), code 0; the kernel fills the checksum and id.
	req := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'h', 'i'}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	buf := make([]byte, 64)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("recvfrom: %w", err)
	}
	if n < 8 || buf[0] != 0 {
		return fmt.Errorf("reply %x is not an echo reply", buf[:n])
	}
	return nil
}
