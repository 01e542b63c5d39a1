package integration

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfigure: -c sets up the TAP (name, MTU, MAC, address, default
// route), brings lo up, and the gateway answers pings.
func TestConfigure(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "--mtu=65520")

	tap := GuestLink(t, g, "tap0")
	if tap.MTU != 65520 {
		t.Errorf("tap0 MTU = %d, want 65520", tap.MTU)
	}
	if !tap.Up() {
		t.Errorf("tap0 is not up: %v", tap.Flags)
	}
	mac, err := net.ParseMAC(tap.Address)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 || mac.String() == "00:00:00:00:00:00" {
		t.Errorf("tap0 MAC %q is not a unicast Ethernet address (%v)", tap.Address, err)
	}
	if !tap.HasAddr("10.0.2.100", 24) {
		t.Errorf("tap0 lacks 10.0.2.100/24: %+v", tap.AddrInfo)
	}
	assertDefaultRoute(t, g, "10.0.2.2")
	if lo := GuestLink(t, g, "lo"); !lo.Up() {
		t.Errorf("lo is not up: %v", lo.Flags)
	}
	Ping(t, g, "10.0.2.2")
}

func assertDefaultRoute(t *testing.T, g *Guest, gw string) {
	t.Helper()
	routes := GuestDefaultRoute(t, g)
	if len(routes) != 1 || routes[0].Gateway != gw || routes[0].Dev != "tap0" {
		t.Errorf("default route = %+v, want via %s dev tap0", routes, gw)
	}
}

// TestDefaultMTU: without --mtu the TAP gets 1500.
func TestDefaultMTU(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c")
	if mtu := GuestLink(t, g, "tap0").MTU; mtu != 1500 {
		t.Errorf("tap0 MTU = %d, want 1500", mtu)
	}
}

// TestCIDR: --cidr moves every address of the plan.
func TestCIDR(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "--cidr=10.0.3.0/24")
	if tap := GuestLink(t, g, "tap0"); !tap.HasAddr("10.0.3.100", 24) {
		t.Errorf("tap0 lacks 10.0.3.100/24: %+v", tap.AddrInfo)
	}
	assertDefaultRoute(t, g, "10.0.3.2")
	Ping(t, g, "10.0.3.2")
	if out := GuestTool(t, g, "dns", "10.0.3.3:53", "udp", testName); strings.TrimSpace(out) != testNameAddr {
		t.Errorf("DNS through 10.0.3.3: %q, want %s", out, testNameAddr)
	}
}

// TestMACAddress: --macaddress sets the TAP's MAC.
func TestMACAddress(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	const mac = "02:11:22:33:44:55"
	StartSlirp(t, g, "-c", "--macaddress="+mac)
	if got := GuestLink(t, g, "tap0").Address; got != mac {
		t.Errorf("tap0 MAC = %q, want %q", got, mac)
	}
}

// TestReadyFD: the ready-fd gets exactly "1", then EOF, while slirp4netns
// keeps running (so neither it nor a child keeps the fd open).
func TestReadyFD(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirp(t, g, "-c")
	rest, err := s.ReadyRest()
	if err != nil {
		t.Fatalf("ready-fd after '1': %v (want EOF; is the fd still open somewhere?)", err)
	}
	if rest != "" {
		t.Errorf("ready-fd: got %q after '1', want nothing", rest)
	}
	if !s.Running() {
		t.Errorf("slirp4netns exited after signalling ready: %s", s.Stderr.String())
	}
}

// TestExitFD: closing the exit-fd ends slirp4netns with status 0 and leaves
// nothing behind: no process, no TAP, no API socket.
func TestExitFD(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	if _, err := os.Stat(s.APISocket); err != nil {
		t.Fatalf("API socket: %v", err)
	}
	s.CloseExitFD()
	err, ok := s.Wait(exitTimeout)
	if !ok {
		t.Fatalf("still running %v after the exit-fd was closed", exitTimeout)
	}
	if err != nil {
		t.Fatalf("exit: %v, want status 0\nstderr:\n%s", err, s.Stderr.String())
	}
	s.CheckNothingLeft(t)
}

// TestSIGTERM: SIGTERM (and SIGQUIT, SIGINT, SIGHUP, which the test starts
// us with at their default) ends slirp4netns and leaves no process or TAP.
// Deliberate difference: ours exits 0 and removes its API socket; C
// slirp4netns 1.2.0 dies by the signal and leaves the socket file (and
// without our handler, the Go runtime would dump its goroutines on SIGQUIT
// and exit 2).
func TestSIGTERM(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: goImpl()})
			if err := s.Cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err, ok := s.Wait(exitTimeout)
			if !ok {
				t.Fatalf("still running %v after %v", exitTimeout, sig)
			}
			if goImpl() {
				if err != nil || strings.Contains(s.Stderr.String(), "goroutine") {
					t.Errorf("after %v: %v, want exit status 0 and no dump\nstderr:\n%s", sig, err, s.Stderr.String())
				}
			} else {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != sig {
					t.Errorf("C slirp4netns after %v: %v, want killed by it", sig, err)
				}
			}
			s.CheckNothingLeft(t)
		})
	}
}

// TestIgnoredSignals: started with SIGINT and SIGHUP ignored (a shell's
// background job, nohup), slirp4netns keeps running when they arrive, as
// C 1.2.0 does, and SIGTERM still ends it.
func TestIgnoredSignals(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, Wrapper: []string{"env", "--ignore-signal=INT,HUP"}})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP} {
		if err := s.Cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	// Either signal would end us at once (TestSIGTERM): give an exit a
	// moment to show.
	if err, exited := s.Wait(500 * time.Millisecond); exited {
		t.Fatalf("exited after ignored SIGINT/SIGHUP: %v\nstderr:\n%s", err, s.Stderr.String())
	}
	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Wait(exitTimeout); !ok {
		t.Fatalf("still running %v after SIGTERM", exitTimeout)
	}
	s.CheckNothingLeft(t)
}

// TestTapNameDefault: deliberate difference: the TAP name is optional in
// ours (default tap0) and required by C slirp4netns 1.2.0.
func TestTapNameDefault(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	o := SlirpOptions{Args: []string{"-c"}, Positional: []string{strconv.Itoa(g.PID)}, Tap: "tap0"}
	if !goImpl() {
		RunSlirpFail(t, g, o)
		return
	}
	StartSlirpWith(t, g, o)
	if tap := GuestLink(t, g, "tap0"); !tap.HasAddr("10.0.2.100", 24) {
		t.Errorf("tap0 lacks 10.0.2.100/24: %+v", tap.AddrInfo)
	}
}

// TestNetnsTypePath: --netns-type=path with a bind-mounted netns file.
func TestNetnsTypePath(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	f := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run("mount", "--bind", g.NetnsPath(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("umount", f) })
	StartSlirpWith(t, g, SlirpOptions{
		Args:       []string{"-c", "--netns-type=path"},
		Positional: []string{f, "tap1"},
		Tap:        "tap1",
	})
	if tap := GuestLink(t, g, "tap1"); !tap.HasAddr("10.0.2.100", 24) {
		t.Errorf("tap1 lacks 10.0.2.100/24: %+v", tap.AddrInfo)
	}
	Ping(t, g, "10.0.2.2")
}

// TestUserns: a guest with its own user namespace, found from its PID, and
// given as --netns-type=path with --userns-path.
func TestUserns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts func(g *Guest) SlirpOptions
	}{
		{"pid", func(g *Guest) SlirpOptions {
			return SlirpOptions{Args: []string{"-c"}}
		}},
		{"path", func(g *Guest) SlirpOptions {
			return SlirpOptions{
				Args:       []string{"-c", "--netns-type=path", "--userns-path=" + g.UsernsPath()},
				Positional: []string{g.NetnsPath(), "tap0"},
				Tap:        "tap0",
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartUserGuest(t)
			StartSlirpWith(t, g, tc.opts(g))
			if tap := GuestLink(t, g, "tap0"); !tap.HasAddr("10.0.2.100", 24) || !tap.Up() {
				t.Errorf("tap0 not configured: %+v", tap)
			}
			Ping(t, g, "10.0.2.2")
		})
	}
}

// TestBadInput: every invalid command line gives a message on stderr, a
// non-zero exit and leaves nothing behind.
func TestBadInput(t *testing.T) {
	t.Parallel()
	notNetns := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(notNetns, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	const pid = "PID" // replaced by the guest's PID
	tests := []struct {
		name       string
		args       []string
		positional []string // default: PID tap0
		goImplOnly bool     // C slirp4netns 1.2.0 accepts it
		readyFD    bool     // --ready-fd=3 with fd 3 closed
	}{
		{name: "mtu zero", args: []string{"-c", "--mtu=0"}},
		{name: "mtu too big", args: []string{"-c", "--mtu=65522"}},
		{name: "mtu not a number", args: []string{"-c", "--mtu=abc"}},
		{name: "cidr prefix 33", args: []string{"-c", "--cidr=10.0.2.0/33"}},
		{name: "cidr prefix 26", args: []string{"-c", "--cidr=10.0.2.0/26"}},
		{name: "cidr garbage", args: []string{"-c", "--cidr=foo"}},
		{name: "bad mac", args: []string{"-c", "--macaddress=zz"}},
		{name: "mac without configure", args: []string{"--macaddress=02:00:00:00:00:01"}},
		{name: "bess with configure", args: []string{"-c", "--target-type=bess"}, positional: []string{"BESSDIR/bess.sock"}},
		{name: "unknown netns-type", args: []string{"-c", "--netns-type=foo"}},
		{name: "unknown target-type", args: []string{"-c", "--target-type=foo"}},
		{name: "no such pid", args: []string{"-c"}, positional: []string{"4194000", "tap0"}},
		{name: "path not a netns", args: []string{"-c", "--netns-type=path"}, positional: []string{notNetns, "tap0"}},
		{name: "no such path", args: []string{"-c", "--netns-type=path"}, positional: []string{notNetns + ".missing", "tap0"}},
		{name: "no positional args", args: []string{"-c"}, positional: []string{}},
		{name: "unknown option", args: []string{"-c", "--no-such-option"}},
		{name: "ready-fd not open", args: []string{"-c"}, readyFD: true, goImplOnly: true},
	}
	for _, tc := range tests {
		if tc.goImplOnly && !goImpl() {
			t.Logf("%s: not checked against C slirp4netns (it accepts this input)", tc.name)
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			pos := []string{pid, "tap0"}
			if tc.positional != nil {
				pos = tc.positional
			}
			pos = append([]string{}, pos...)
			for i, p := range pos {
				if p == pid {
					pos[i] = strconv.Itoa(g.PID)
				}
				pos[i] = strings.Replace(pos[i], "BESSDIR", t.TempDir(), 1)
			}
			res := RunSlirpFail(t, g, SlirpOptions{Args: tc.args, Positional: pos, API: true, Tap: "tap0", ReadyFDClosed: tc.readyFD})
			t.Logf("stderr: %s", firstLine(res.Stderr))
		})
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// TestHelpVersion: --help and --version exit 0 and print what tools grep for.
func TestHelpVersion(t *testing.T) {
	t.Parallel()
	bin, err := slirpBin()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ arg, want string }{
		{"--help", "[OPTION]... PID|PATH [TAPNAME]"},
		{"-h", "--netns-type=TYPE"},
		{"--version", "slirp4netns version "},
		{"-v", "slirp4netns version "},
	} {
		out, err := exec.Command(bin, tc.arg).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: %v, output %q lacks %q", tc.arg, err, out, tc.want)
		}
	}
}

// TestStartupTime: ready within a second (C: a few ms); a loose bound that
// still catches a start-up that waits on a timeout.
func TestStartupTime(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	start := time.Now()
	StartSlirp(t, g, "-c")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ready after %v, want < 3s", d)
	}
}
