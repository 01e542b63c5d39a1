package integration

// Real clients: rootlesskit and podman from Debian run the binary under test
// unchanged, and --netns-type=tapfd with a TAP the test opens itself.
//
// rootlesskit and podman refuse to run as root, and need /etc/subuid and
// /etc/subgid ranges for newuidmap. The root variant therefore creates the
// user clientUserName with such ranges on the host (idempotently, at the
// top stage) and gives its outer namespace an identity map wide enough to
// hold that user and its ranges (clientOuter). The rootless variant's outer
// namespace maps a single uid, so the client tests (clientTestsPattern) are
// left out of it; the tools run unprivileged in the root variant anyway.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// clientUserName is the unprivileged user that runs rootlesskit and
	// podman in the root variant's outer namespace.
	clientUserName = "slirptest"
	// clientTestsPattern selects the tests that need that user.
	clientTestsPattern = "^TestClient"
	// subIDCount is the size of the user's subordinate uid/gid ranges.
	subIDCount = 65536
	// subIDFloor is where new subordinate ranges start at the earliest.
	subIDFloor = 100000
	// clientTimeout bounds one rootlesskit or podman run.
	clientTimeout = 90 * time.Second
)

// Host ports of the client tests (distinct from every other test's).
const (
	clientPortRKBase   = 18280 // + case index, rootlesskit -p
	clientPortPodman   = 18290
	clientPortTapFD    = 18291
	clientPortTapFDHdr = 18292
)

// idRange is a range of subordinate ids.
type idRange struct{ start, count int }

func (r idRange) end() int { return r.start + r.count }

// clientUser is the test user with its subordinate ranges.
type clientUser struct {
	uid, gid       int
	subuid, subgid idRange
}

// clientOuter is called by the top stage of the root variant, as real root:
// it makes sure the client user exists and returns the outer namespace's
// command line and attributes with an identity uid/gid map that covers the
// user and its ranges (unshare(1) only maps one id, or ranges of
// /etc/subuid of the caller).
func clientOuter(argv []string) ([]string, *syscall.SysProcAttr, error) {
	u, err := ensureClientUser()
	if err != nil {
		return nil, nil, fmt.Errorf("client test user: %w", err)
	}
	n := max(subIDCount, u.uid+1, u.gid+1, u.subuid.end(), u.subgid.end())
	out := slices.DeleteFunc(slices.Clone(argv), func(a string) bool {
		return a == "--user" || a == "--map-root-user"
	})
	attr := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: n}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: n}},
		// newuidmap, runc and podman call setgroups.
		GidMappingsEnableSetgroups: true,
	}
	return out, attr, nil
}

// ensureClientUser creates the client user and its /etc/subuid and
// /etc/subgid entries when missing (idempotent) and returns them.
func ensureClientUser() (clientUser, error) {
	if _, err := user.Lookup(clientUserName); err != nil {
		err := run("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", clientUserName)
		if err != nil {
			return clientUser{}, err
		}
	}
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		mine, all, err := readSubIDs(f.file, clientUserName)
		if err != nil {
			return clientUser{}, err
		}
		if mine.count >= subIDCount {
			continue
		}
		start := subIDFloor
		for _, r := range all {
			start = max(start, r.end())
		}
		if err := run("usermod", f.flag, fmt.Sprintf("%d-%d", start, start+subIDCount-1), clientUserName); err != nil {
			return clientUser{}, err
		}
	}
	return lookupClientUser()
}

// lookupClientUser returns the client user as the system files describe it.
func lookupClientUser() (clientUser, error) {
	pw, err := user.Lookup(clientUserName)
	if err != nil {
		return clientUser{}, err
	}
	u := clientUser{}
	u.uid, _ = strconv.Atoi(pw.Uid)
	u.gid, _ = strconv.Atoi(pw.Gid)
	if u.subuid, _, err = readSubIDs("/etc/subuid", clientUserName); err != nil {
		return clientUser{}, err
	}
	if u.subgid, _, err = readSubIDs("/etc/subgid", clientUserName); err != nil {
		return clientUser{}, err
	}
	return u, nil
}

// readSubIDs returns name's first range of at least subIDCount ids in file
// (the zero range if none) and every range of the file.
func readSubIDs(file, name string) (mine idRange, all []idRange, err error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return idRange{}, nil, nil
	}
	if err != nil {
		return idRange{}, nil, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		r := idRange{start, count}
		all = append(all, r)
		if f[0] == name && mine.count < subIDCount {
			mine = r
		}
	}
	return mine, all, nil
}

// clientEnv is where a client test runs its tool as the client user.
type clientEnv struct {
	user  clientUser
	stage string // 0755: slirp4netns (the binary under test) and integration.test
	home  string // the user's HOME, with XDG_RUNTIME_DIR=home/run
	mark  string // envMark value of everything started, for the leftover check
}

// newClientEnv prepares a client run. It fails the test when the outer
// namespace has no unprivileged user (the harness maps one for the root
// variant only).
func newClientEnv(t *testing.T) *clientEnv {
	t.Helper()
	u, err := lookupClientUser()
	if err != nil {
		t.Fatalf("client user %s (created by the root variant's set-up): %v", clientUserName, err)
	}
	if !idMapped(u.uid) || !idMapped(u.subuid.start+u.subuid.count-1) {
		t.Fatalf("uid %d or its subordinate range %v is not mapped in this outer namespace", u.uid, u.subuid)
	}
	e := &clientEnv{user: u, mark: "client-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	e.stage = mkdirOwned(t, 0o755, 0, 0)
	bin, err := slirpBin()
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for src, name := range map[string]string{bin: "slirp4netns", self: "integration.test"} {
		if err := copyFile(src, filepath.Join(e.stage, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.home = mkdirOwned(t, 0o700, u.uid, u.gid)
	if err := os.Mkdir(filepath.Join(e.home, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(e.home, "run"), u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if left := markedProcesses(e.mark); len(left) > 0 {
			t.Errorf("processes left behind: %s", strings.Join(left, "; "))
		}
	})
	return e
}

// idMapped reports whether uid is mapped in this user namespace.
func idMapped(uid int) bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		start, _ := strconv.Atoi(f[0])
		count, _ := strconv.Atoi(f[2])
		if uid >= start && uid < start+count {
			return true
		}
	}
	return false
}

// mkdirOwned makes a temporary directory with mode and owner, removed when
// the test ends (as root, whatever the user left in it).
func mkdirOwned(t *testing.T, mode os.FileMode, uid, gid int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "slirptest-client-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAllWritable(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// removeAllWritable removes dir even where podman's vfs storage left
// read-only directories.
func removeAllWritable(dir string) {
	if os.RemoveAll(dir) == nil {
		return
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

// command returns argv run as the client user, with the binary under test
// first in PATH.
func (e *clientEnv) command(ctx context.Context, argv ...string) *exec.Cmd {
	full := append([]string{"setpriv", "--reuid=" + strconv.Itoa(e.user.uid), "--regid=" + strconv.Itoa(e.user.gid),
		"--init-groups", "--"}, argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Dir = e.home
	cmd.Env = []string{
		"PATH=" + e.stage + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + e.home,
		"USER=" + clientUserName,
		"LOGNAME=" + clientUserName,
		"XDG_RUNTIME_DIR=" + filepath.Join(e.home, "run"),
		"XDG_CONFIG_HOME=" + filepath.Join(e.home, ".config"),
		envMark + "=" + e.mark,
		envStage + "=tool", // integration.test runs as a tool in the child
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// rootlesskitCase is one rootlesskit command line.
type rootlesskitCase struct {
	name     string
	args     []string
	loopback bool // the host's loopback must be reachable through 10.0.2.2
	port     bool // -p publishes the child's port 80
}

// TestClientRootlesskit: rootlesskit --net=slirp4netns runs our binary (first
// in PATH) unchanged: rootlesskit creates tap0 itself and starts us without
// -c. The child reaches the outer loopback through 10.0.2.2 (unless
// --disable-host-loopback) and, with --port-driver=slirp4netns, the outer
// namespace reaches the child's server through the published port.
// rootlesskit 1.1.0 has no --detach-netns (added in 2.0).
func TestClientRootlesskit(t *testing.T) {
	t.Parallel()
	cases := []rootlesskitCase{
		{name: "plain", loopback: true},
		{name: "disable-host-loopback", args: []string{"--disable-host-loopback"}},
		{name: "sandbox-seccomp", args: []string{"--slirp4netns-sandbox=true", "--slirp4netns-seccomp=true"}, loopback: true},
		{name: "port-driver", args: []string{"--port-driver=slirp4netns"}, loopback: true, port: true},
		{name: "all", args: []string{"--disable-host-loopback", "--slirp4netns-sandbox=true",
			"--slirp4netns-seccomp=true", "--port-driver=slirp4netns", "--ipv6"}, port: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runRootlesskit(t, tc, clientPortRKBase+i)
		})
	}
}

func runRootlesskit(t *testing.T, tc rootlesskitCase, port int) {
	e := newClientEnv(t)
	args := []string{"rootlesskit", "--net=slirp4netns", "--copy-up=/etc", "--copy-up=/run",
		"--state-dir=" + filepath.Join(e.home, "rk-state")}
	args = append(args, tc.args...)
	if tc.port {
		args = append(args, "-p", fmt.Sprintf("127.0.0.1:%d:80/tcp", port))
	}
	// The child checks the outer loopback, then serves port 80 until
	// rootlesskit passes it SIGTERM.
	tool := filepath.Join(e.stage, "integration.test")
	script := fmt.Sprintf(`set -e
ip -o -4 addr show dev tap0
%[1]s dial 10.0.2.2:%[2]d 3s
exec %[1]s serve tcp 0.0.0.0:80`, tool, echoPort)
	args = append(args, "sh", "-c", script)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := e.command(ctx, args...)
	out := runUntilReady(t, cmd, "ready")
	if !strings.Contains(out, "inet 10.0.2.100/24") {
		t.Errorf("tap0 in the child has no 10.0.2.100/24:\n%s", out)
	}
	reached := strings.Contains(out, "connected")
	if reached != tc.loopback {
		t.Errorf("child reached the outer loopback through 10.0.2.2: %v, want %v:\n%s", reached, tc.loopback, out)
	}
	if tc.port {
		got, err := dialPeer(hostPort("127.0.0.1", port), "")
		if err != nil || !strings.HasPrefix(got, "peer=") {
			t.Errorf("published port 127.0.0.1:%d: %q, %v; want the child's peer=... answer", port, got, err)
		}
	}
	stopClient(t, cmd)
}

// runUntilReady starts cmd, waits for a line equal to marker on its stdout
// and returns everything it printed until then (stdout and stderr).
func runUntilReady(t *testing.T, cmd *exec.Cmd, marker string) string {
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
	lines := make(chan string)
	var out syncBuffer
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if strings.TrimSpace(sc.Text()) == marker {
				lines <- sc.Text()
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case _, ok := <-lines:
		if !ok {
			t.Fatalf("%q ended before %q:\nstdout:\n%s\nstderr:\n%s", cmd.Args, marker, out.String(), stderr.String())
		}
	case <-time.After(clientTimeout):
		t.Fatalf("%q: no %q after %v:\nstdout:\n%s\nstderr:\n%s", cmd.Args, marker, clientTimeout, out.String(), stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%q stderr:\n%s", cmd.Args, stderr.String())
		}
	})
	return out.String() + stderr.String()
}

// stopClient sends SIGTERM to the client (rootlesskit passes it to its
// child) and expects it to exit within exitTimeout.
func stopClient(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(exitTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("%q did not exit within %v of SIGTERM", cmd.Args, exitTimeout)
	}
}

// TestNetnsTypeTapFD: --netns-type=tapfd, the positional argument is an
// inherited TAP fd that the caller opened in the guest (slirp4netns 1.3);
// with and without IFF_VNET_HDR. The guest configures the TAP itself (-c
// does not apply). C 1.2.0 has no tapfd and must fail.
func TestNetnsTypeTapFD(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		flags uint16
		port  int
	}{
		{"plain", unix.IFF_TAP | unix.IFF_NO_PI, clientPortTapFD},
		{"vnet-hdr", unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR, clientPortTapFDHdr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			tap := openGuestTap(t, g, "tap0", tc.flags)
			o := SlirpOptions{Args: []string{"--netns-type=tapfd"}, Positional: []string{"5"},
				API: true, Tap: "tap0", ExtraFiles: []*os.File{tap}}
			if !goImpl() {
				RunSlirpFail(t, g, o)
				return
			}
			s := StartSlirpWith(t, g, o)
			tap.Close() // slirp4netns holds the only copy now: the TAP goes when it exits
			for _, c := range [][]string{
				{"ip", "addr", "add", "10.0.2.100/24", "dev", "tap0"},
				{"ip", "link", "set", "tap0", "up"},
				{"ip", "route", "add", "default", "via", "10.0.2.2"},
			} {
				InGuest(t, g, c...)
			}
			if out := GuestTool(t, g, "echo", "tcp", hostPort("10.0.2.2", echoPort), "100000"); !strings.Contains(out, "ok") {
				t.Errorf("echo through 10.0.2.2: %q", out)
			}
			if out := GuestTool(t, g, "dns", "10.0.2.3:53", "udp", testName); strings.TrimSpace(out) != testNameAddr {
				t.Errorf("DNS through 10.0.2.3: %q, want %s", out, testNameAddr)
			}
			StartGuestServer(t, g, "tcp", "0.0.0.0:80")
			AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", tc.port, 80)
			if got, err := dialPeer(hostPort("127.0.0.1", tc.port), ""); err != nil || got != "peer=10.0.2.2\n" {
				t.Errorf("add_hostfwd to the tapfd guest: %q, %v", got, err)
			}
		})
	}
}

// openGuestTap opens a new (non-persistent) TAP named name with flags in
// the guest's network namespace, as a caller of --netns-type=tapfd does.
// The file is closed when the test ends.
func openGuestTap(t *testing.T, g *Guest, name string, flags uint16) *os.File {
	t.Helper()
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// setns affects this thread only: keep it locked, and if it
		// cannot return to its namespace let it die with the goroutine.
		runtime.LockOSThread()
		f, back, err := openTapIn(g.NetnsPath(), name, flags)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{f, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("open TAP %s in guest %d: %v", name, g.PID, r.err)
	}
	t.Cleanup(func() { r.f.Close() })
	return r.f
}

// openTapIn runs on a locked thread: it enters netns, opens the TAP and
// returns to the thread's namespace; back says whether that worked.
func openTapIn(netns, name string, flags uint16) (f *os.File, back bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer orig.Close()
	target, err := os.Open(netns)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("setns %s: %w", netns, err)
	}
	f, err = openTap(name, flags)
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
		if f != nil {
			f.Close()
		}
		return nil, false, fmt.Errorf("return to the test's netns: %w", serr)
	}
	return f, true, err
}

// openTap opens /dev/net/tun and attaches it to a new TAP in the current
// thread's network namespace.
func openTap(name string, flags uint16) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}
