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
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
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
	// clientPortPodmanLayout: TestPodmanLayout's forward.
	clientPortPodmanLayout = 18293
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
	user   clientUser
	stage  string // 0755: slirp4netns (the binary under test) and integration.test
	home   string // the user's HOME
	runDir string // the user's XDG_RUNTIME_DIR: short, as podman's socket paths under it must fit sun_path
	mark   string // envMark value of everything started, for the leftover check
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
	e := &clientEnv{user: u, mark: "client-" + rand.Text()}
	e.stage = mkdirOwned(t, "slirptest-client-", 0o755, 0, 0)
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
	e.home = mkdirOwned(t, "slirptest-home-", 0o700, u.uid, u.gid)
	e.runDir = mkdirOwned(t, "sr", 0o700, u.uid, u.gid)
	t.Cleanup(func() {
		var left []string
		if !poll(leftoverWait, func() bool { left = markedProcesses(e.mark); return len(left) == 0 }) {
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
func mkdirOwned(t *testing.T, prefix string, mode os.FileMode, uid, gid int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
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
		"XDG_RUNTIME_DIR=" + e.runDir,
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
	// The child checks the outer loopback and the DNS relay (of the outer
	// namespace's test DNS server), then serves port 80 until rootlesskit
	// passes it SIGTERM.
	tool := filepath.Join(e.stage, "integration.test")
	script := fmt.Sprintf(`set -e
ip -o -4 addr show dev tap0
%[1]s dial 10.0.2.2:%[2]d 1s
%[1]s dns 10.0.2.3:53 udp %[3]s
exec %[1]s serve tcp 0.0.0.0:80`, tool, echoPort, testName)
	args = append(args, "sh", "-c", script)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := e.command(ctx, args...)
	out := runUntilReady(t, cmd, "ready", clientTimeout)
	t.Logf("rootlesskit %q, child until ready:\n%s", tc.args, out)
	if !strings.Contains(out, "inet 10.0.2.100/24") {
		t.Errorf("tap0 in the child has no 10.0.2.100/24:\n%s", out)
	}
	if !strings.Contains(out, testNameAddr) {
		t.Errorf("child resolved %s through 10.0.2.3 to no %s:\n%s", testName, testNameAddr, out)
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

// TestDetachNetnsFlow runs us as rootlesskit 2's --detach-netns does (the
// Debian rootlesskit 1.1.0 has no such option): the TAP exists already
// (persistent, up, made by the caller in a guest with its own user
// namespace), the network namespace is a bind-mounted file, the command
// line is "--userns-path=/proc/PID/ns/user --netns-type=path PATH tap0"
// without -c, and the caller ends us with SIGKILL: the helper and engine
// must not outlive us.
func TestDetachNetnsFlow(t *testing.T) {
	t.Parallel()
	g := StartUserGuest(t)
	InGuest(t, g, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
	InGuest(t, g, "ip", "link", "set", "tap0", "up")
	f := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run("mount", "--bind", g.NetnsPath(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("umount", f) })
	s := StartSlirpWith(t, g, SlirpOptions{
		Args:       []string{"--mtu=65520", "--userns-path=" + g.UsernsPath(), "--netns-type=path"},
		Positional: []string{f, "tap0"},
		// No TAP check: the persistent TAP is the caller's and stays.
	})
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.0.2.100/24", "dev", "tap0"},
		{"ip", "route", "add", "default", "via", "10.0.2.2"},
	} {
		InGuest(t, g, c...)
	}
	if out := GuestTool(t, g, "echo", "tcp", hostPort("10.0.2.2", echoPort), "100000"); !strings.Contains(out, "ok") {
		t.Errorf("echo through 10.0.2.2: %q", out)
	}
	s.kill() // SIGKILL, as rootlesskit does
	s.CheckNothingLeft(t)
	if l := GuestLink(t, g, "tap0"); !l.Up() {
		t.Errorf("the caller's persistent tap0 changed: %+v", l)
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
				o.Tap = "" // the TAP is the test's, open until it ends
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

// podmanImage is the local image the podman test imports.
const podmanImage = "localhost/slirptest-busybox:latest"

// busyboxApplets are linked in the image's /bin.
var busyboxApplets = []string{"sh", "nc", "httpd", "mkdir", "echo", "cat", "printf", "ip", "sleep", "true"}

// podman is a clientEnv configured for rootless podman: cgroupfs, file
// events, runc (crun refuses this machine's hybrid cgroup layout), vfs
// storage in HOME, and network_cmd_path naming slirp4netns (podman 4.3
// ignores helper_binaries_dir for it).
type podman struct {
	*clientEnv
	slirp string // network_cmd_path
}

// newPodman writes the configuration for slirp4netns binary slirp and
// imports the busybox image.
func newPodman(t *testing.T, e *clientEnv, slirp string) *podman {
	t.Helper()
	p := &podman{clientEnv: e, slirp: slirp}
	cfg := filepath.Join(e.home, ".config", "containers")
	files := map[string]string{
		"containers.conf": fmt.Sprintf(`[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
network_cmd_path = %q
`, slirp),
		"storage.conf": fmt.Sprintf(`[storage]
driver = "vfs"
runroot = %q
graphroot = %q
`, filepath.Join(e.runDir, "containers"), filepath.Join(e.home, "storage")),
	}
	for name, content := range files {
		writeOwned(t, e, filepath.Join(cfg, name), content)
	}
	tarball := busyboxTarball(t, e)
	p.run(t, "import", tarball, podmanImage)
	t.Cleanup(func() { p.stopPause(t) })
	return p
}

// writeOwned writes a file (and its missing parents) owned by the client user.
func writeOwned(t *testing.T, e *clientEnv, path, content string) {
	t.Helper()
	rel, err := filepath.Rel(e.home, filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	dir := e.home
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, e.user.uid, e.user.gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, e.user.uid, e.user.gid); err != nil {
		t.Fatal(err)
	}
}

// busyboxTarball makes a root file system of busybox-static, as a tarball
// the client user can read.
func busyboxTarball(t *testing.T, e *clientEnv) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile("/bin/busybox", filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		t.Fatalf("busybox-static: %v", err)
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(e.stage, "busybox.tar")
	if err := run("tar", "-C", root, "-cf", tarball, "."); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	return tarball
}

// run runs podman with args as the client user and returns its output.
func (p *podman) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.runErr(args...)
	if err != nil {
		t.Fatalf("podman %q: %v\n%s", args, err, out)
	}
	return out
}

func (p *podman) runErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	out, err := p.command(ctx, append([]string{"podman"}, args...)...).CombinedOutput()
	return string(out), err
}

// stopPause ends podman's rootless pause process (it keeps the user
// namespace alive for later podman commands), so that the leftover check
// sees only what should have gone by itself.
func (p *podman) stopPause(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(p.runDir, "libpod", "tmp", "pause.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if !poll(leftoverWait, func() bool { return len(markedProcesses(p.mark)) == 0 }) {
		t.Errorf("processes left after podman: %s", strings.Join(markedProcesses(p.mark), "; "))
	}
}

// containerScript runs in the container: it fetches the outer loopback's
// HTTP page through 10.0.2.2, then serves port 80 until SIGTERM (the shell
// is PID 1, which ignores signals it has no handler for, hence the trap).
const containerScript = `printf 'GET / HTTP/1.0\r\n\r\n' | nc 10.0.2.2 8080
mkdir -p /www && echo container-ok >/www/index.html
trap 'exit 0' TERM
httpd -f -p 80 -h /www &
echo ready
wait`

// TestClientPodman: rootless podman 4.3 with network_cmd_path set to our
// binary runs a container with --network slirp4netns:port_handler=
// slirp4netns,allow_host_loopback=true: the container reaches the outer
// loopback through 10.0.2.2 and the outer namespace reaches the
// container's port 80 through -p. podman info shows our --version.
func TestClientPodman(t *testing.T) {
	t.Parallel()
	e := newClientEnv(t)
	p := newPodman(t, e, filepath.Join(e.stage, "slirp4netns"))

	want, err := exec.Command(p.slirp, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	info := p.run(t, "info", "--format", "{{.Host.Slirp4NetNS.Executable}}\n{{.Host.Slirp4NetNS.Version}}")
	if !strings.Contains(info, p.slirp) || !strings.Contains(info, strings.TrimSpace(string(want))) {
		t.Errorf("podman info: %q; want %s and its --version %q", info, p.slirp, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := p.command(ctx, "podman", "run", "--rm", "--pull=never",
		"--network", "slirp4netns:port_handler=slirp4netns,allow_host_loopback=true",
		"-p", fmt.Sprintf("127.0.0.1:%d:80", clientPortPodman), "--dns", "none",
		podmanImage, "sh", "-c", containerScript)
	out := runUntilReady(t, cmd, "ready", clientTimeout)
	t.Logf("podman run, until ready:\n%s", out)
	if !strings.Contains(out, "hello from the outer namespace") {
		t.Errorf("container did not reach the outer loopback's HTTP server through 10.0.2.2:\n%s", out)
	}
	if got := httpGetRetry(hostPort("127.0.0.1", clientPortPodman)); got != "container-ok\n" {
		t.Errorf("published port 127.0.0.1:%d: %q, want the container's page", clientPortPodman, got)
	}
	stopClient(t, cmd)
}

// podmanRuns is how many containers TestClientPodmanSpeed times per binary.
const podmanRuns = 7

// envPodmanCompare names further slirp4netns binaries (separated by ':')
// that TestClientPodmanSpeed times in the same interleaved runs, e.g. the
// build before a change: A/B comparisons on a noisy machine must come from
// one invocation.
const envPodmanCompare = "SLIRPTEST_PODMAN_COMPARE"

// envPodmanRuns overrides podmanRuns (1 to 100) for such comparisons.
const envPodmanRuns = "SLIRPTEST_PODMAN_RUNS"

// TestClientPodmanSpeed: repeated "podman run"s (each starts slirp4netns
// and waits for its ready-fd) all work with the binary under test, and the
// medians against the C slirp4netns (~0.2 s here) are logged. The bound is
// for liveness only (a start-up that hangs or retries), not a performance
// check: speed is measured with benchmarks, and this shared 2-core machine
// is far too noisy for a timing assertion. Not parallel: it runs before the
// parallel tests start.
func TestClientPodmanSpeed(t *testing.T) {
	e := newClientEnv(t)
	p := newPodman(t, e, filepath.Join(e.stage, "slirp4netns"))
	bins := []string{p.slirp, "/usr/bin/slirp4netns"}
	for _, b := range filepath.SplitList(os.Getenv(envPodmanCompare)) {
		if b != "" {
			bins = append(bins, b)
		}
	}
	times := make([][]time.Duration, len(bins))
	timed := func(i int) time.Duration {
		p.setNetworkCmd(t, bins[i])
		start := time.Now()
		p.run(t, "run", "--rm", "--pull=never", "--network", "slirp4netns", "--dns", "none", podmanImage, "true")
		return time.Since(start)
	}
	runs := podmanRuns
	if n, err := strconv.Atoi(os.Getenv(envPodmanRuns)); err == nil && n >= 1 && n <= 100 {
		runs = n
	}
	timed(0) // warm-up: podman's first run sets up its pause process and storage
	for r := range runs {
		for k := range bins { // rotated: no binary always goes first
			i := (k + r) % len(bins)
			times[i] = append(times[i], timed(i))
		}
	}
	ours, c := median(times[0]), median(times[1])
	t.Logf("podman run --rm --network slirp4netns ... true, median of %d: %v with %s, %v with the C slirp4netns (all: %v, %v)",
		runs, ours, bins[0], c, times[0], times[1])
	for i := 2; i < len(bins); i++ {
		t.Logf("  and %v with %s (all: %v)", median(times[i]), bins[i], times[i])
	}
	// A -race build sleeps at exit in every process (GORACE atexit_sleep_ms,
	// which podman's environment for us does not carry): no liveness signal.
	if ours > 2*c+time.Second && !raceBuild() {
		t.Errorf("podman run takes %v with %s, %v with the C slirp4netns", ours, bins[0], c)
	}
}

// setNetworkCmd points network_cmd_path at bin.
func (p *podman) setNetworkCmd(t *testing.T, bin string) {
	t.Helper()
	conf := filepath.Join(p.home, ".config", "containers", "containers.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "network_cmd_path") {
			lines[i] = fmt.Sprintf("network_cmd_path = %q", bin)
		}
	}
	writeOwned(t, p.clientEnv, conf, strings.Join(lines, "\n"))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// httpGetRetry fetches / from addr, retrying for a few seconds while the
// server starts; it returns the body or the last error as text.
func httpGetRetry(addr string) string {
	var last string
	for range 25 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
			b, rerr := io.ReadAll(c)
			c.Close()
			if _, body, ok := strings.Cut(string(b), "\r\n\r\n"); ok {
				return body
			}
			last = fmt.Sprintf("reply %q (%v)", b, rerr)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// TestPodmanLayout runs us the way rootless podman does, without podman:
// the supervisor in the container's user namespace (nsenter -U, as root
// there) while its network namespace stays the outer one, which that user
// namespace does not own, and "--netns-type=path PATH tap0" without
// --userns-path. Our binary then opens the TAP on a thread that cannot
// come back and is discarded: the engine, forked before, must survive it
// (Pdeathsig fires when the forking thread ends), no thread of ours may be
// left in the container's namespace, and the guest must reach the outer
// loopback.
func TestPodmanLayout(t *testing.T) {
	t.Parallel()
	g := StartUserGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{
		Wrapper:    []string{"nsenter", "-U", "-t", strconv.Itoa(g.PID), "--preserve-credentials"},
		Args:       []string{"--mtu=65520", "--enable-ipv6", "-c", "--netns-type=path"},
		Positional: []string{g.NetnsPath(), "tap0"},
		Tap:        "tap0",
		API:        true,
	})
	if out := GuestTool(t, g, "echo", "tcp", hostPort("10.0.2.2", echoPort), "100000"); !strings.Contains(out, "ok") {
		t.Errorf("echo through 10.0.2.2: %q", out)
	}
	if !goImpl() {
		return // the thread checks are about our processes
	}
	outer, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	engine := enginePID(t, s.PID())
	for _, pid := range []int{s.PID(), engine} {
		if st := processState(pid); st == "Z" || st == "" {
			t.Errorf("process %d is in state %q", pid, st)
		}
		for tid, ns := range threadNetns(t, pid) {
			if ns != outer {
				t.Errorf("thread %d of process %d is in %s, not in our network namespace %s", tid, pid, ns, outer)
			}
		}
	}
	AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", clientPortPodmanLayout, 80)
	StartGuestServer(t, g, "tcp", "0.0.0.0:80")
	if got, err := dialPeer(hostPort("127.0.0.1", clientPortPodmanLayout), ""); err != nil || got != "peer=10.0.2.2\n" {
		t.Errorf("add_hostfwd in podman's layout: %q, %v", got, err)
	}
}

// processState is the state letter of pid ("Z": zombie), "" if it is gone.
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok || rest == "" {
		return "?"
	}
	return rest[:1]
}

// threadNetns maps each thread of pid to its network namespace.
func threadNetns(t *testing.T, pid int) map[int]string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	out := make(map[int]string)
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/task/%d/ns/net", pid, tid))
		if err != nil {
			continue // the thread just ended
		}
		out[tid] = ns
	}
	return out
}

// layoutStarts is how many starts TestPodmanLayoutStartup times per binary.
const layoutStarts = 9

// TestPodmanLayoutStartup starts slirp4netns repeatedly in podman's layout
// (see TestPodmanLayout) with the flags podman passes, ours and the C
// slirp4netns interleaved (and the binaries of envPodmanCompare), and logs
// the medians from exec to the ready-fd. Every start must become ready and
// exit 0 on the exit-fd; the times are logged, never checked: this shared
// machine is far too noisy for that (docs/benchmarks.md has measurements).
func TestPodmanLayoutStartup(t *testing.T) {
	ours, err := slirpBin()
	if err != nil {
		t.Fatal(err)
	}
	bins := []string{ours, "/usr/bin/slirp4netns"}
	for _, b := range filepath.SplitList(os.Getenv(envPodmanCompare)) {
		if b != "" {
			bins = append(bins, b)
		}
	}
	times := make([][]time.Duration, len(bins))
	for r := range layoutStarts {
		for k := range bins { // rotated: no binary always goes first
			i := (k + r) % len(bins)
			times[i] = append(times[i], startInPodmanLayout(t, bins[i]))
		}
	}
	for i, b := range bins {
		t.Logf("start to ready in podman's layout (--enable-sandbox --enable-seccomp --enable-ipv6 -c), median of %d: %v with %s (all: %v)",
			layoutStarts, median(times[i]), b, times[i])
	}
}

// startInPodmanLayout runs bin for a new guest as podman does, returns the
// time from exec to the ready-fd's "1", and stops it through the exit-fd.
func startInPodmanLayout(t *testing.T, bin string) time.Duration {
	t.Helper()
	g := StartUserGuest(t)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer exitW.Close()
	api := filepath.Join(t.TempDir(), "api.sock")
	cmd := exec.Command("nsenter", "-U", "-t", strconv.Itoa(g.PID), "--preserve-credentials", bin,
		"--mtu=65520", "--enable-sandbox", "--enable-seccomp", "--enable-ipv6", "-c", "-e", "3", "-r", "4",
		"--api-socket", api, "--netns-type=path", g.NetnsPath(), "tap0")
	cmd.ExtraFiles = []*os.File{exitR, readyW} // fds 3 and 4, as podman passes them
	out, err := newOutFile(t)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out.f, out.f
	start := time.Now()
	err = cmd.Start()
	readyW.Close()
	exitR.Close()
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	_ = readyR.SetReadDeadline(time.Now().Add(readyTimeout))
	b := make([]byte, 1)
	n, rerr := readyR.Read(b)
	took := time.Since(start)
	exitW.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-time.After(exitTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within %v of its exit-fd closing", bin, exitTimeout)
	}
	if n != 1 || b[0] != '1' || rerr != nil || werr != nil {
		t.Fatalf("%s in podman's layout: ready %q (%v), exit %v\n%s", bin, b[:n], rerr, werr, out.String())
	}
	return took
}

// TestHelpProbe: the --help probe podman runs before every container
// (exec, CombinedOutput) gets the C slirp4netns's text, for each help form
// our binary answers before its Go runtime starts (cmd/slirp4netns/
// fasthelp.c), and the same bytes as the Go path gives (the same form
// twice: only a lone form takes the fast path). The C version prints its
// argv[0], so every binary runs as "slirp4netns".
func TestHelpProbe(t *testing.T) {
	t.Parallel()
	bin, err := slirpBin()
	if err != nil {
		t.Fatal(err)
	}
	probe := func(path string, args ...string) string {
		cmd := exec.Command(path, args...)
		cmd.Args[0] = "slirp4netns"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s %q: %v\n%s", path, args, err, out)
		}
		return string(out)
	}
	want := probe("/usr/bin/slirp4netns", "--help")
	if !strings.Contains(want, "--enable-sandbox") {
		t.Fatalf("the C slirp4netns's --help: %q", want)
	}
	for _, form := range []string{"--help", "-h", "--h", "--he", "--hel"} {
		if got := probe(bin, form); got != want {
			t.Errorf("%s %s:\n%s\nthe C slirp4netns --help:\n%s", bin, form, got, want)
		}
		if got := probe(bin, form, form); got != want {
			t.Errorf("%s %s %s:\n%s\nthe C slirp4netns --help:\n%s", bin, form, form, got, want)
		}
	}
}
