//go:build linux && cgo

package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
)

// childTimeout bounds every re-executed child.
const childTimeout = 20 * time.Second

// sandboxEnv is the environment that makes the constructor act.
var sandboxEnv = []string{ModeEnv + "=" + ModeEngine, SandboxEnv + "=1"}

// childCmd returns a command re-executing the test binary in role with env
// added.
func childCmd(t *testing.T, ctx context.Context, role string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = withEnv(os.Environ(), append([]string{childEnv + "=" + role}, env...)...)
	cmd.Stderr = &testutil.SyncBuffer{}
	return cmd
}

// secretFiles creates files outside /etc and /run that the sandbox must
// hide: one in the test's temporary directory and one in $HOME.
func secretFiles(t *testing.T) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []string{p}
	home, err := os.UserHomeDir()
	if err == nil {
		f, err := os.CreateTemp(home, ".slirp4netns-sandbox-test-*")
		if err == nil {
			f.Close()
			t.Cleanup(func() { os.Remove(f.Name()) })
			files = append(files, f.Name())
		} else {
			t.Logf("no secret file in $HOME (%v)", err)
		}
	}
	return files
}

// setupAttr puts the setup child in a mount namespace of its own: as root
// with unshare (Go makes it private), otherwise in a user namespace mapping
// only our own ids (so the sandboxed child, still not uid 0, takes the
// own-user-namespace path) with CAP_SYS_ADMIN kept across exec for the
// mounts.
func setupAttr() *syscall.SysProcAttr {
	if os.Geteuid() == 0 {
		return &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	uid, gid := os.Geteuid(), os.Getegid()
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		AmbientCaps: []uintptr{unix.CAP_SYS_ADMIN},
	}
}

// rootUsernsAttr makes the child uid 0 of a new user namespace, with a new
// mount namespace owned by it (unshare --user --map-root-user --mount).
func rootUsernsAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
}

// selfTestCase is one way /etc/resolv.conf looks to the sandboxed child.
type selfTestCase struct {
	name string
	// prepare returns the setup spec ("" for none), the file the host
	// edits (or ""), and the first line the child must see.
	prepare func(t *testing.T, dir string) (setup, hostFile, want string)
	// boundTarget: the sandbox must bind the resolv.conf target itself.
	boundTarget bool
	// rootUserns runs the child as uid 0 of a user namespace whose mount
	// namespace locks the host's mounts (podman rootless runs
	// slirp4netns like this).
	rootUserns bool
	// after is the first line of resolv.conf the child must see after the
	// host's change, when prepare's hostFile is "".
	after string
}

var selfTestCases = []selfTestCase{
	{"host resolv.conf", func(t *testing.T, dir string) (string, string, string) {
		return "", "", firstLine(t, "/etc/resolv.conf")
	}, false, false, ""},
	{"resolv.conf bind-mounted file", func(t *testing.T, dir string) (string, string, string) {
		p := filepath.Join(dir, "resolv.conf")
		writeFile(t, p, "nameserver 127.0.0.53 # A\n")
		return "file:" + p, p, "nameserver 127.0.0.53 # A"
	}, false, false, ""},
	{"resolv.conf symlink outside /etc and /run", func(t *testing.T, dir string) (string, string, string) {
		target := filepath.Join(dir, "real-resolv.conf")
		writeFile(t, target, "nameserver 127.0.0.53 # A\n")
		link := filepath.Join(dir, "resolv-link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		return "symlink:" + link, target, "nameserver 127.0.0.53 # A"
	}, true, false, ""},
	{"root of a user namespace", func(t *testing.T, dir string) (string, string, string) {
		return "none:", "", firstLine(t, "/etc/resolv.conf")
	}, false, true, ""},
	// The host mounts another file on /etc/resolv.conf while the engine
	// runs (as NetworkManager or podman may): the sandbox's mounts are
	// slaves of the host's, so the new mount shows inside.
	{"resolv.conf mounted over on the host later", func(t *testing.T, dir string) (string, string, string) {
		first, second := filepath.Join(dir, "first"), filepath.Join(dir, "second")
		writeFile(t, first, "nameserver 127.0.0.53 # A\n")
		writeFile(t, second, "nameserver 127.0.0.55 # C\n")
		return "propagate:" + first + "," + second, "", "nameserver 127.0.0.53 # A"
	}, false, false, "nameserver 127.0.0.55 # C"},
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func firstLine(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// TestSelfTest runs the sandboxed, seccomp-filtered child: every forbidden
// action fails, Verify passes, CapEff is CAP_NET_BIND_SERVICE only,
// resolv.conf is readable and a change made on the host is visible inside.
func TestSelfTest(t *testing.T) {
	for _, tc := range selfTestCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			setup, hostFile, want := tc.prepare(t, dir)
			attr := setupAttr()
			if tc.rootUserns {
				attr = rootUsernsAttr()
			}
			res := runSelfTest(t, selfTestRun{role: roleSelfTest, setup: setup, attr: attr,
				hostFile: hostFile, want: want, after: tc.after, secrets: secretFiles(t)})
			if len(res.allowed) > 0 {
				t.Errorf("forbidden actions succeeded: %q", res.allowed)
			}
			info := res.info
			wantTarget := "-"
			if tc.boundTarget {
				wantTarget = hostFile
			}
			if info["resolv-target"] != wantTarget {
				t.Errorf("resolv.conf target bound = %q, want %q", info["resolv-target"], wantTarget)
			}
			// Root keeps its user namespace; anyone else gets one of the
			// sandbox's own.
			if want := fmt.Sprint(os.Geteuid() != 0 && !tc.rootUserns); info["own-userns"] != want {
				t.Errorf("own user namespace = %s, want %s", info["own-userns"], want)
			}
		})
	}
}

// selfTestResult is what a self-test child reported.
type selfTestResult struct {
	allowed []string
	info    map[string]string
}

// selfTestRun describes one self-test child.
type selfTestRun struct {
	role  string // roleSelfTest or roleSandboxOnly
	setup string // setupEnv for the setup child; "" runs the child directly
	attr  *syscall.SysProcAttr
	// wrap is a command line the child runs under (e.g. setpriv ...).
	wrap     []string
	hostFile string // edited on the host while the child waits; "" for none
	want     string // first line of resolv.conf the child must see
	after    string // ... after the change, when not hostFile's
	secrets  []string
}

// runSelfTest runs a sandboxed child as r describes, checks its report and
// returns the actions it was allowed and its INFO lines.
func runSelfTest(t *testing.T, r selfTestRun) selfTestResult {
	role, setup, attr, hostFile, want, secrets := r.role, r.setup, r.attr, r.hostFile, r.want, r.secrets
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	abstract := fmt.Sprintf("@slirp4netns-sandbox-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ln, err := net.Listen("unix", abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := append(slices.Clone(sandboxEnv), SelfTestFilesEnv+"="+strings.Join(secrets, ":"),
		SelfTestAbstractEnv+"="+abstract, dialEnv+"="+startPong(t))
	var cmd *exec.Cmd
	if setup == "" {
		cmd = childCmd(t, ctx, role, env...)
	} else {
		execEnv := append([]string{childEnv + "=" + role}, env...)
		cmd = childCmd(t, ctx, roleSetup, setupEnv+"="+setup, setupExecEnv+"="+strings.Join(execEnv, ";"))
		cmd.SysProcAttr = attr
	}
	if len(r.wrap) > 0 {
		cmd.Args = append(slices.Clone(r.wrap), cmd.Args...)
		cmd.Path = r.wrap[0]
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := readUntil(t, stdout, "INFO waiting")
	after := "nameserver 127.0.0.54 # B"
	switch {
	case hostFile != "":
		// In place, as an editor writing the file would; the sandbox sees
		// the same inode.
		writeFile(t, hostFile, after+"\n")
	case r.after != "":
		after = r.after
	default:
		after = want
	}
	io.WriteString(stdin, "\n")
	rest, _ := io.ReadAll(stdout)
	werr := cmd.Wait()
	all := out + string(rest)
	t.Logf("child output:\n%s", all)
	if werr != nil {
		t.Fatalf("child: %v; stderr: %s", werr, cmd.Stderr)
	}
	return checkSelfTest(t, all, want, after, len(secrets))
}

// readUntil reads lines from r until one equals marker and returns them.
func readUntil(t *testing.T, r io.Reader, marker string) string {
	t.Helper()
	var b strings.Builder
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if strings.TrimSuffix(line, "\n") == marker {
			return b.String()
		}
		if err != nil {
			t.Fatalf("child output ended before %q: %v\n%s", marker, err, b.String())
		}
	}
}

func checkSelfTest(t *testing.T, out, want, after string, nSecrets int) selfTestResult {
	t.Helper()
	if strings.Contains(out, "FAIL") {
		t.Fatalf("child reported a failure")
	}
	if !strings.Contains(out, "INFO verify ok\n") {
		t.Errorf("Verify did not pass")
	}
	denied, allowed, info, err := ParseSelfTest(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"execve", "ptrace", "mount", "unshare", "clone CLONE_NEWUSER", "kill", "read /proc/", "ioctl TIOCSTI",
		"connect AF_UNIX", "open /etc/resolv.conf for writing"} {
		if !slices.ContainsFunc(append(slices.Clone(denied), allowed...),
			func(s string) bool { return strings.HasPrefix(s, prefix) }) {
			t.Errorf("no line for %s", prefix)
		}
	}
	if got := countPrefix(append(slices.Clone(denied), allowed...), "open /"); got != nSecrets+1 {
		t.Errorf("%d open attempts denied, want %d", got, nSecrets+1)
	}
	for _, k := range []string{"net-tcp-dial", "net-udp", "net-interfaces"} {
		if info[k] != "ok" {
			t.Errorf("%s in the sandbox: %q", k, info[k])
		}
	}
	_, err = os.Stat("/run")
	if want := fmt.Sprint(err == nil); info["run-visible"] != want {
		t.Errorf("/run visible in the sandbox: %s, want %s", info["run-visible"], want)
	}
	if info["capeff"] != "0x400" {
		t.Errorf("CapEff = %q, want 0x400 (CAP_NET_BIND_SERVICE)", info["capeff"])
	}
	if info["resolv.conf"] != want {
		t.Errorf("resolv.conf in the sandbox = %q, want %q", info["resolv.conf"], want)
	}
	if info["resolv.conf-after"] != after {
		t.Errorf("resolv.conf after the host's change = %q, want %q", info["resolv.conf-after"], after)
	}
	return selfTestResult{allowed: allowed, info: info}
}

// setprivAsRoot returns the path of setpriv(1), for a case that runs a
// child with fewer privileges than root's. Run by another user, it logs
// why the case has nothing to do and returns "".
func setprivAsRoot(t *testing.T, why string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Logf("running as uid %d: %s", os.Geteuid(), why)
		return ""
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv is needed: %v", err)
	}
	return setpriv
}

// TestRootWithoutSysAdmin: root without CAP_SYS_ADMIN (as in a container)
// cannot unshare a mount namespace, so the sandbox makes a user namespace of
// its own, as for an unprivileged user.
func TestRootWithoutSysAdmin(t *testing.T) {
	setpriv := setprivAsRoot(t, "this case needs root")
	if setpriv == "" {
		return
	}
	res := runSelfTest(t, selfTestRun{role: roleSelfTest,
		wrap:    []string{setpriv, "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"},
		want:    firstLine(t, "/etc/resolv.conf"),
		secrets: secretFiles(t)})
	if len(res.allowed) > 0 {
		t.Errorf("forbidden actions succeeded: %q", res.allowed)
	}
	if res.info["own-userns"] != "true" {
		t.Errorf("own user namespace = %s, want true", res.info["own-userns"])
	}
}

// kernelLandlockABI returns the kernel's Landlock ABI version, 0 if none.
func kernelLandlockABI() int {
	const sysLandlockCreateRuleset, versionFlag = 444, 1
	v, _, errno := unix.Syscall(sysLandlockCreateRuleset, 0, 0, versionFlag)
	if errno != 0 {
		return 0
	}
	return int(v)
}

// TestSandboxOnly: --enable-sandbox without --enable-seccomp still stops
// every forbidden action (no files, no capabilities, read-only mounts,
// Landlock for ptrace, signals and abstract sockets, no nested user
// namespaces), with two exceptions: kernels before Landlock ABI 6 (Linux
// 6.12) allow the Landlock three, and a root engine (which keeps the host's
// user namespace) may create user namespaces.
func TestSandboxOnly(t *testing.T) {
	res := runSelfTest(t, selfTestRun{role: roleSandboxOnly, want: firstLine(t, "/etc/resolv.conf"),
		secrets: secretFiles(t)})
	abi, err := strconv.Atoi(res.info["landlock-abi"])
	if err != nil {
		t.Fatalf("landlock-abi %q: %v", res.info["landlock-abi"], err)
	}
	t.Logf("Landlock ABI %d", abi)
	if want := kernelLandlockABI(); abi != want {
		t.Errorf("sandbox Landlock ABI %d, kernel offers %d", abi, want)
	}
	for _, a := range res.allowed {
		landlockOnly := strings.HasPrefix(a, "ptrace") || strings.HasPrefix(a, "kill") ||
			strings.HasPrefix(a, "connect AF_UNIX")
		// Only the sandbox's own user namespace can limit nested ones;
		// root keeps the host's.
		usernsOnly := strings.HasPrefix(a, "clone CLONE_NEWUSER")
		switch {
		case landlockOnly && abi < 6:
		case usernsOnly && res.info["own-userns"] == "false":
		default:
			t.Errorf("forbidden action succeeded without seccomp: %s", a)
		}
	}
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestSocketsUnderSeccomp: what the engine does (outbound TCP to a loopback
// listener of ours, UDP, ICMP sockets, netlink, readv/writev, new threads)
// works under ApplySeccomp, and fork+exec does not.
// The filter is the precompiled program where one exists, and the one
// libseccomp builds at run time.
func TestSocketsUnderSeccomp(t *testing.T) {
	for _, role := range []string{roleSockets, roleSocketsLibseccomp} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
			defer cancel()
			cmd := childCmd(t, ctx, role, dialEnv+"="+startPong(t))
			out, err := cmd.Output()
			t.Logf("child output:\n%s", out)
			if err != nil {
				t.Fatalf("child: %v; stderr: %s", err, cmd.Stderr)
			}
			if n, want := strings.Count(string(out), "OK "), len(socketChecks([2]int{}))+len(listenerChecks(nil)); n != want {
				t.Errorf("%d checks passed, want %d", n, want)
			}
			wantFilter := "libseccomp"
			if role == roleSockets && enginePrecompiled != nil {
				wantFilter = "precompiled"
			}
			if !strings.Contains(string(out), "INFO filter "+wantFilter+"\n") {
				t.Errorf("the child did not report the %s filter", wantFilter)
			}
		})
	}
}

// TestICMPUnderSeccomp: the engine's ping relay (unprivileged ICMP echo
// sockets) works under the filter, in a network namespace of the test.
func TestICMPUnderSeccomp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	cmd := childCmd(t, ctx, roleICMP)
	cmd.SysProcAttr = rootUsernsAttr()
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "OK ping") {
		t.Fatalf("child: %v\n%s\nstderr: %s", err, out, cmd.Stderr)
	}
}

// startPong starts a loopback TCP server that answers as servePong does,
// for the children's "tcp dial" check, until the test ends. It returns
// the server's address.
func startPong(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { servePong(ln) })
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// servePong answers "pong" to one line per connection until ln closes.
func servePong(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(childTimeout))
		if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			io.WriteString(c, "pong\n")
		}
		c.Close()
	}
}

// TestLightSeccomp: the deny-list refuses mount and ptrace, allows the rest.
// The filter is the precompiled program where one exists, and the one
// libseccomp builds at run time.
func TestLightSeccomp(t *testing.T) {
	for _, role := range []string{roleLight, roleLightLibseccomp} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
			defer cancel()
			cmd := childCmd(t, ctx, role)
			out, err := cmd.Output()
			if err != nil || !strings.Contains(string(out), "OK light") {
				t.Fatalf("child: %v\n%s\nstderr: %s", err, out, cmd.Stderr)
			}
		})
	}
}

// TestConstructorFailure: when the sandbox cannot be entered (here: the
// light filter refuses mount/unshare), the engine exits 1 with a clear
// message rather than running unsandboxed.
func TestConstructorFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	execEnv := append([]string{childEnv + "=" + roleActive}, sandboxEnv...)
	cmd := childCmd(t, ctx, roleLightExec, setupExecEnv+"="+strings.Join(execEnv, ";"))
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child: %v, want exit status 1\n%s", err, out)
	}
	stderr := cmd.Stderr.(*testutil.SyncBuffer).String()
	if !regexp.MustCompile(`(?m)^slirp4netns: sandbox: \S.*: Operation not permitted$`).MatchString(stderr) {
		t.Errorf("stderr = %q, want a 'slirp4netns: sandbox: <step>: Operation not permitted' line", stderr)
	}
	if strings.Contains(string(out), "active=") {
		t.Errorf("the Go program ran after the constructor failed: %s", out)
	}
}

// TestConstructorInactive: only _SLIRP4NETNS_MODE=engine with
// _SLIRP4NETNS_SANDBOX=1 enters the sandbox.
func TestConstructorInactive(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"no env", nil, "active=false"},
		{"sandbox without engine mode", []string{SandboxEnv + "=1"}, "active=false"},
		{"helper mode", []string{ModeEnv + "=helper", SandboxEnv + "=1"}, "active=false"},
		{"engine without sandbox", []string{ModeEnv + "=" + ModeEngine}, "active=false"},
		{"sandbox=0", []string{ModeEnv + "=" + ModeEngine, SandboxEnv + "=0"}, "active=false"},
		{"engine with sandbox", sandboxEnv, "active=true"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
			defer cancel()
			cmd := childCmd(t, ctx, roleActive, tc.env...)
			// Start from an environment without the variables under test.
			cmd.Env = withEnv(cmd.Env, ModeEnv+"=", SandboxEnv+"=")
			cmd.Env = withEnv(cmd.Env, tc.env...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v; stderr: %s", err, cmd.Stderr)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNotActiveInTestProcess: the test process itself is not sandboxed.
func TestNotActiveInTestProcess(t *testing.T) {
	if Active() {
		t.Fatal("Active() in the test process")
	}
	if err := Verify(); err == nil {
		t.Fatal("Verify() succeeded outside the sandbox")
	}
	if ResolvTarget() != "" || OwnUserNamespace() || LandlockABI() != 0 {
		t.Fatal("sandbox state set outside the sandbox")
	}
	if err := Confine(true, false); err == nil {
		t.Fatal("Confine(--enable-sandbox) succeeded outside the sandbox")
	}
	if err := Confine(false, false); err != nil {
		t.Fatalf("Confine with nothing asked: %v", err)
	}
}

// TestFilterArchitectures builds (without loading) the engine filter for
// amd64 and arm64 and checks the rules each gets, so the arm64 build is
// exercised on an amd64 machine and vice versa.
func TestFilterArchitectures(t *testing.T) {
	f, count, err := newEngineFilter(os.Getpid(), otherArch(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Release()
	t.Logf("%d syscalls allowed on the native architecture", count)
	if native, _ := seccomp.GetNativeArch(); countAllowedOn(native) != count {
		t.Errorf("filter allows %d syscalls, the tables %d", count, countAllowedOn(native))
	}
	if count < 80 || count > 140 {
		t.Errorf("%d syscalls allowed: the list changed a lot, review it", count)
	}
	for _, a := range []seccomp.ScmpArch{seccomp.ArchAMD64, seccomp.ArchARM64} {
		t.Logf("%v: %d syscalls allowed", a, countAllowedOn(a))
	}
	pfc := exportPFC(t, f)
	for _, arch := range []string{"x86_64", "aarch64"} {
		if !strings.Contains(pfc, "# filter for arch "+arch) {
			t.Errorf("no %s section in the filter", arch)
		}
	}
	for _, name := range []string{"clone", "openat", "socket", "ioctl", "tgkill", "recvmmsg", "futex", "epoll_pwait"} {
		if !strings.Contains(pfc, "# filter for syscall \""+name+"\"") {
			t.Errorf("no rule for %s", name)
		}
	}
}

// countAllowedOn counts the allowed syscall names that exist on arch.
func countAllowedOn(arch seccomp.ScmpArch) int {
	names := map[string]bool{}
	for _, g := range allowGroups {
		for _, n := range g.names {
			names[n] = true
		}
	}
	for _, r := range conditionalRules(1) {
		names[r.name] = true
	}
	count := 0
	for n := range names {
		if nr, err := seccomp.GetSyscallFromNameByArch(n, arch); err == nil && nr >= 0 {
			count++
		}
	}
	return count
}

func otherArch(t *testing.T) seccomp.ScmpArch {
	native, err := seccomp.GetNativeArch()
	if err != nil {
		t.Fatal(err)
	}
	if native == seccomp.ArchARM64 {
		return seccomp.ArchAMD64
	}
	return seccomp.ArchARM64
}

func exportPFC(t *testing.T, f *seccomp.ScmpFilter) string {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "pfc")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := f.ExportPFC(out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRuleNamesResolve catches typos: every name in seccomp_rules.go is a
// syscall of amd64 or arm64.
func TestRuleNamesResolve(t *testing.T) {
	var names []string
	for _, g := range allowGroups {
		names = append(names, g.names...)
	}
	names = append(names, enosysNames...)
	names = append(names, lightDenyNames...)
	for _, r := range conditionalRules(1) {
		names = append(names, r.name)
	}
	for _, name := range names {
		ok := false
		for _, a := range []seccomp.ScmpArch{seccomp.ArchAMD64, seccomp.ArchARM64} {
			if nr, err := seccomp.GetSyscallFromNameByArch(name, a); err == nil && nr >= 0 {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%q is not a syscall on amd64 or arm64", name)
		}
	}
	for _, deny := range []string{"execve", "execveat", "ptrace", "mount", "umount2", "pivot_root",
		"unshare", "setns", "bpf", "keyctl", "socketpair", "fork", "vfork", "kill", "listen"} {
		for _, g := range allowGroups {
			if slices.Contains(g.names, deny) {
				t.Errorf("%s is allowed unconditionally", deny)
			}
		}
	}
}

func TestLibseccompVersion(t *testing.T) {
	v := LibseccompVersion()
	var major, minor, micro int
	if _, err := fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &micro); err != nil {
		t.Fatalf("LibseccompVersion() = %q: %v", v, err)
	}
	if major < 2 || (major == 2 && minor < 5) {
		t.Errorf("LibseccompVersion() = %q, want >= 2.5", v)
	}
}

// TestUnprivileged re-runs the sandbox tests as an unprivileged user (uid
// 65534) when running as root, from a copy of the test binary in a 0755
// directory. Run unprivileged, this run is that case.
func TestUnprivileged(t *testing.T) {
	setpriv := setprivAsRoot(t, "the other tests are the unprivileged run")
	if setpriv == "" {
		return
	}
	dir := testutil.SharedTempDir(t, "sandbox-unpriv")
	bin := testutil.CopyTestBinary(t, dir, "sandbox.test")
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*childTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run=^Test(SelfTest|SandboxOnly|SocketsUnderSeccomp|ICMPUnderSeccomp|LightSeccomp|ConstructorFailure)$", "-test.v")
	cmd.Dir = dir
	cmd.Env = withEnv(os.Environ(), "HOME="+home, "TMPDIR="+home)
	out, err := cmd.CombinedOutput()
	t.Logf("unprivileged run:\n%s", out)
	if err != nil {
		t.Fatalf("unprivileged run: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestSelfTest ") {
		t.Errorf("TestSelfTest did not pass unprivileged")
	}
}

// FuzzParseSelfTest: ParseSelfTest reads a child's output; it must not panic
// and must account for every DENIED/ALLOWED line.
func FuzzParseSelfTest(f *testing.F) {
	f.Add("DENIED execve /bin/true: operation not permitted\nALLOWED mount tmpfs\nINFO capeff 0x400\n")
	f.Add("INFO resolv.conf nameserver 10.0.0.1\n")
	f.Add("DENIED\nALLOWED\nINFO\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		denied, allowed, info, err := ParseSelfTest(strings.NewReader(s))
		if err != nil {
			return
		}
		if len(denied)+len(allowed) == 0 || info == nil {
			t.Fatalf("no error but nothing parsed from %q", s)
		}
	})
}
