package helper

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// target is a process sitting in fresh namespaces made for one test.
type target struct {
	pid int
	h   *netlink.Handle
}

func (tg target) netnsPath() string  { return "/proc/" + strconv.Itoa(tg.pid) + "/ns/net" }
func (tg target) usernsPath() string { return "/proc/" + strconv.Itoa(tg.pid) + "/ns/user" }

// newTarget starts `unshare --net sleep` (with withUserns, in a new user
// namespace too, mapped to root) and returns once sleep runs, so that the
// namespaces (and the uid map) are in place. It is killed at cleanup.
func newTarget(t *testing.T, withUserns bool) target {
	t.Helper()
	args := []string{"--net"}
	if withUserns {
		args = []string{"--user", "--map-root-user", "--net"}
	}
	cmd := exec.Command("unshare", append(args, "sleep", "30")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid := cmd.Process.Pid
	waitFor(t, "target namespaces", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	tg := target{pid: pid}
	ns, err := netns.GetFromPath(tg.netnsPath())
	if err != nil {
		t.Fatalf("netns of %d: %v", pid, err)
	}
	t.Cleanup(func() { ns.Close() })
	if tg.h, err = netlink.NewHandleAt(ns); err != nil {
		t.Fatalf("netlink handle in netns of %d: %v", pid, err)
	}
	t.Cleanup(tg.h.Close)
	return tg
}

// run runs a command inside the target's network namespace.
func (tg target) run(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{"-t", strconv.Itoa(tg.pid), "-n"}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openTapT(t *testing.T, req Request) (*os.File, proto.TapInfo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, info, err := OpenTap(ctx, req)
	if err != nil {
		t.Fatalf("OpenTap: %v", err)
	}
	return f, info
}

func defaultConfig() proto.HelperConfig {
	return proto.HelperConfig{TapName: "tap0", MTU: 1500, CIDR: "10.0.2.0/24"}
}

const wantOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

func TestOpenTapCreateConfigure(t *testing.T) {
	tg := newTarget(t, false)
	cfg := defaultConfig()
	cfg.Configure, cfg.MTU, cfg.EnableIPv6 = true, 65520, true
	cfg.MACAddress = "02:11:22:33:44:55"
	var stderr bytes.Buffer
	tap, info := openTapT(t, Request{NetnsPath: tg.netnsPath(), Config: cfg, Stderr: &stderr})
	want := proto.TapInfo{Name: "tap0", VnetHdr: true, Offloads: wantOffloads, Created: true}
	if info != want {
		t.Errorf("TapInfo = %+v, want %+v", info, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("helper stderr: %q", stderr.String())
	}
	link, err := tg.h.LinkByName("tap0")
	if err != nil {
		t.Fatalf("tap0 in target: %v", err)
	}
	a := link.Attrs()
	if a.MTU != 65520 || a.HardwareAddr.String() != cfg.MACAddress || a.Flags&net.FlagUp == 0 {
		t.Errorf("tap0: mtu %d mac %s flags %v; want 65520 %s up", a.MTU, a.HardwareAddr, a.Flags, cfg.MACAddress)
	}
	checkAddrRoute(t, tg, link, "10.0.2.100/24", "10.0.2.2")
	lo, err := tg.h.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo not up: %v", err)
	}
	for k, v := range map[string]string{"accept_ra": "1", "disable_ipv6": "0"} {
		if got := tg.run(t, "cat", "/proc/sys/net/ipv6/conf/tap0/"+k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	got, err := InspectTapFD(int(tap.Fd()))
	if err != nil || got.Name != "tap0" || !got.VnetHdr {
		t.Errorf("InspectTapFD = %+v, %v; want tap0 with vnet header", got, err)
	}
	// A TAP we created is not persistent: it goes with the last fd.
	tap.Close()
	waitFor(t, "tap0 to disappear", func() bool {
		_, err := tg.h.LinkByName("tap0")
		return err != nil
	})
}

func checkAddrRoute(t *testing.T, tg target, link netlink.Link, addr, gw string) {
	t.Helper()
	addrs, err := tg.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != addr {
		t.Errorf("addresses = %v, %v; want [%s]", addrs, err, addr)
	}
	routes, err := tg.h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("routes: %v", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == gw {
			return
		}
	}
	t.Errorf("no default route via %s in %v", gw, routes)
}

func TestOpenTapUsernsRandomMAC(t *testing.T) {
	tg := newTarget(t, true)
	cfg := defaultConfig()
	cfg.Configure, cfg.CIDR = true, "10.0.3.0/24"
	var stderr bytes.Buffer
	req := Request{UsernsPath: tg.usernsPath(), NetnsPath: tg.netnsPath(), Config: cfg, Stderr: &stderr}
	tap, info := openTapT(t, req)
	defer tap.Close()
	if !info.Created || info.Name != "tap0" {
		t.Errorf("TapInfo = %+v", info)
	}
	if stderr.Len() != 0 {
		t.Errorf("helper stderr: %q", stderr.String())
	}
	link, err := tg.h.LinkByName("tap0")
	if err != nil {
		t.Fatalf("tap0 in target: %v", err)
	}
	// The kernel's random MAC: locally administered, unicast.
	if mac := link.Attrs().HardwareAddr; len(mac) != 6 || mac[0]&0x03 != 0x02 {
		t.Errorf("MAC %s is not a locally administered unicast address", mac)
	}
	checkAddrRoute(t, tg, link, "10.0.3.100/24", "10.0.3.2")
}

// TestOpenTapOwnUserns passes our own user namespace, as the supervisor
// does for a PID whose namespace is ours: the constructor must skip it
// quietly (setns into one's own user namespace would fail).
func TestOpenTapOwnUserns(t *testing.T) {
	tg := newTarget(t, false)
	var stderr bytes.Buffer
	req := Request{UsernsPath: tg.usernsPath(), NetnsPath: tg.netnsPath(), Config: defaultConfig(), Stderr: &stderr}
	tap, info := openTapT(t, req)
	defer tap.Close()
	if !info.Created || stderr.Len() != 0 {
		t.Errorf("TapInfo = %+v, stderr %q", info, stderr.String())
	}
}

func TestOpenTapNoConfigure(t *testing.T) {
	tg := newTarget(t, false)
	cfg := defaultConfig()
	cfg.DisableOffload = true
	tap, info := openTapT(t, Request{NetnsPath: tg.netnsPath(), Config: cfg})
	defer tap.Close()
	want := proto.TapInfo{Name: "tap0", Created: true}
	if info != want {
		t.Errorf("TapInfo = %+v, want %+v", info, want)
	}
	link, err := tg.h.LinkByName("tap0")
	if err != nil {
		t.Fatalf("tap0 in target: %v", err)
	}
	if link.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("unconfigured tap0 is up")
	}
	if addrs, _ := tg.h.AddrList(link, netlink.FAMILY_V4); len(addrs) != 0 {
		t.Errorf("unconfigured tap0 has addresses %v", addrs)
	}
	got, err := InspectTapFD(int(tap.Fd()))
	if err != nil || got != (proto.TapInfo{Name: "tap0"}) {
		t.Errorf("InspectTapFD = %+v, %v; want tap0 without vnet header", got, err)
	}
}

func TestOpenTapAttachPersistent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"single-queue", nil},
		{"multi-queue", []string{"multi_queue"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, false)
			tg.run(t, append([]string{"ip", "tuntap", "add", "tap0", "mode", "tap"}, tc.extra...)...)
			cfg := defaultConfig()
			cfg.Configure = true
			tap, info := openTapT(t, Request{NetnsPath: tg.netnsPath(), Config: cfg})
			want := proto.TapInfo{Name: "tap0", VnetHdr: true, Offloads: wantOffloads}
			if info != want {
				t.Errorf("TapInfo = %+v, want %+v", info, want)
			}
			link, err := tg.h.LinkByName("tap0")
			if err != nil {
				t.Fatalf("tap0: %v", err)
			}
			checkAddrRoute(t, tg, link, "10.0.2.100/24", "10.0.2.2")
			tap.Close()
			// Persistent: still there once our fd is gone.
			if _, err := tg.h.LinkByName("tap0"); err != nil {
				t.Errorf("persistent tap0 vanished: %v", err)
			}
		})
	}
}

func TestOpenTapHelperErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   []string
		tapName string
		want    string
	}{
		{"not a tap", []string{"ip", "tuntap", "add", "tap0", "mode", "tun"}, "tap0",
			`helper: attach to existing device "tap0" (is it a TAP device?)`},
		{"name too long", nil, "tap0123456789abcdef", `helper: create TAP "tap0123456789abcdef"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, false)
			if tc.setup != nil {
				tg.run(t, tc.setup...)
			}
			cfg := defaultConfig()
			cfg.TapName = tc.tapName
			var stderr bytes.Buffer
			before := children(t)
			_, _, err := OpenTap(context.Background(), Request{NetnsPath: tg.netnsPath(), Config: cfg, Stderr: &stderr})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("OpenTap error = %v, want prefix %q", err, tc.want)
			}
			// The error reaches the user once, through the supervisor.
			if stderr.Len() != 0 {
				t.Errorf("helper stderr = %q, want nothing (the error is returned)", stderr.String())
			}
			if after := children(t); after != before {
				t.Errorf("children %q after, %q before", after, before)
			}
		})
	}
}

// children lists our child processes.
func children(t *testing.T) string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		all = append(all, strings.Fields(string(b))...)
	}
	return strings.Join(all, " ")
}

func TestOpenTapBadNamespace(t *testing.T) {
	regular := t.TempDir() + "/regular"
	if err := os.WriteFile(regular, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		userns, netns string
		want          string
	}{
		{"missing netns", "", "/nonexistent/ns/net",
			`open netns "/nonexistent/ns/net": no such file or directory`},
		{"regular file", "", regular, `open netns "` + regular + `": not a namespace file`},
		{"directory", "", "/proc/self/ns", `open netns "/proc/self/ns": not a namespace file`},
		{"userns as netns", "", "/proc/self/ns/user", `open netns "/proc/self/ns/user": not a network namespace`},
		{"netns as userns", "/proc/self/ns/net", "/proc/self/ns/net", `open userns "/proc/self/ns/net": not a user namespace`},
		{"missing userns", "/proc/999999999/ns/user", "/proc/self/ns/net",
			`open userns "/proc/999999999/ns/user": no such file or directory`},
		{"empty netns", "", "", "open netns: empty path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := children(t)
			_, _, err := OpenTap(context.Background(), Request{UsernsPath: tc.userns, NetnsPath: tc.netns, Config: defaultConfig()})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("OpenTap error = %v, want prefix %q", err, tc.want)
			}
			if cerr := CheckTarget(tc.userns, tc.netns); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("CheckTarget = %v, OpenTap = %v; want the same error", cerr, err)
			}
			if after := children(t); after != before {
				t.Errorf("children %q after, %q before", after, before)
			}
		})
	}
	if err := CheckTarget("/proc/self/ns/user", "/proc/self/ns/net"); err != nil {
		t.Errorf("CheckTarget(own namespaces) = %v", err)
	}
}

func TestInspectTapFDErrors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := InspectTapFD(int(r.Fd())); err == nil || !strings.Contains(err.Error(), "not a TAP fd") {
		t.Errorf("InspectTapFD(pipe) = %v", err)
	}
	tg := newTarget(t, false)
	tun := openTunIn(t, tg)
	defer tun.Close()
	if _, err := InspectTapFD(int(tun.Fd())); err == nil || !strings.Contains(err.Error(), "a TUN, not a TAP") {
		t.Errorf("InspectTapFD(tun) = %v", err)
	}
}

// openTunIn creates a TUN (not TAP) device in the target's network
// namespace.
func openTunIn(t *testing.T, tg target) *os.File {
	t.Helper()
	var f *os.File
	err := testutil.InNetns(tg.netnsPath(), func() error {
		fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if _, err := tunSetIff(fd, "tun0", unix.IFF_TUN|unix.IFF_NO_PI); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "tun")
		return nil
	})
	if err != nil {
		t.Fatalf("create tun in target: %v", err)
	}
	return f
}

// TestNsenterConstructor runs the test binary in helper mode with a
// printing hook instead of Main, to check nsenter.c on its own.
func TestNsenterConstructor(t *testing.T) {
	tg := newTarget(t, true)
	self := func(ns string) string {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	targetNet, err := os.Readlink(tg.netnsPath())
	if err != nil {
		t.Fatal(err)
	}
	targetUser, err := os.Readlink(tg.usernsPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		userns     string // path, or "" for none
		netns      string // path, or "" for none
		env        []string
		wantCode   int
		wantOut    string
		wantStderr string
	}{
		{"both", tg.usernsPath(), tg.netnsPath(), nil, 0, targetNet + "\n" + targetUser + "\n", ""},
		{"netns only", "", tg.netnsPath(), nil, 0, targetNet + "\n" + self("user") + "\n", ""},
		{"own userns", "/proc/self/ns/user", tg.netnsPath(), nil, 0, targetNet + "\n" + self("user") + "\n", ""},
		{"bad userns warns", "/proc/self/ns/net", tg.netnsPath(), nil, 0, targetNet + "\n" + self("user") + "\n",
			"WARNING: setns(CLONE_NEWUSER): Invalid argument\n"},
		{"bad netns", "", "/proc/self/ns/user", nil, 1, "", "setns(CLONE_NEWNET): Invalid argument\n"},
		{"no netns", "", "", nil, 1, "", "slirp4netns helper: _SLIRP4NETNS_NETNS_FD is not set\n"},
		{"garbage fd", "", "", []string{netnsFDEnv + "=4x"}, 1, "", "slirp4netns helper: invalid _SLIRP4NETNS_NETNS_FD=4x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("/proc/self/exe")
			cmd.Env = append(childEnv(os.Environ()), modeEnv+"="+modeHelper, printNetnsEnv+"=1")
			cmd.Env = append(cmd.Env, tc.env...)
			for _, p := range []struct{ path, env string }{{tc.userns, usernsFDEnv}, {tc.netns, netnsFDEnv}} {
				if p.path == "" {
					continue
				}
				f, err := os.Open(p.path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.ExtraFiles = append(cmd.ExtraFiles, f)
				cmd.Env = append(cmd.Env, p.env+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || stdout.String() != tc.wantOut || stderr.String() != tc.wantStderr {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q",
					code, stdout.String(), stderr.String(), tc.wantCode, tc.wantOut, tc.wantStderr)
			}
		})
	}
}

// TestOpenTapTimeout checks that a helper that never answers is killed
// and reaped when the context ends.
func TestOpenTapTimeout(t *testing.T) {
	conn, peer, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer peer.Close() // kept open: the "helper" is silent, not dead
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, xerr := exchangeBounded(ctx, cmd, conn, defaultConfig())
	werr := waitBounded(ctx, cmd)
	if !errors.Is(xerr, context.DeadlineExceeded) {
		t.Errorf("exchange error = %v, want deadline exceeded", xerr)
	}
	if werr == nil || cmd.ProcessState == nil || time.Since(start) > 5*time.Second {
		t.Errorf("helper not killed and reaped in time: %v, %v", werr, cmd.ProcessState)
	}
}
