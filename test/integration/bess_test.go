package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// --target-type=bess: slirp4netns serves one Ethernet frame per datagram on
// a SOCK_SEQPACKET socket, User Mode Linux's "bess" vector transport. No
// guest namespace is involved: the clients here are raw sockets and a real
// UML kernel (Debian's user-mode-linux), all in the outer namespace.
//
// Where the implementations differ (README, "Differences"): ours listens
// before it writes the ready-fd, serves one client at a time (a second one
// is closed at once) and waits for a new client when the current one
// leaves; C 1.2.0 writes the ready-fd only once its client has connected,
// then closes its listener (later clients get ECONNREFUSED) and never
// accepts again.

// Addresses and timeouts of the BESS tests.
const (
	fwdPortBESS = 18300 // add_hostfwd of TestBESSUML

	bessFrameTimeout = time.Second      // one read on a raw BESS client
	bessTries        = 5                // requests sent before giving up
	umlTimeout       = 40 * time.Second // a whole UML run (boots in ~2 s)
)

var (
	bessGuestIP = net.IPv4(10, 0, 2, 100).To4()
	bessGateway = net.IPv4(10, 0, 2, 2).To4()
)

// startBESS starts slirp4netns --target-type=bess on a socket in a new
// directory (see startBESSAt).
func startBESS(t *testing.T, o SlirpOptions) (*Slirp, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "bess.sock")
	return startBESSAt(t, sock, o), sock
}

// startBESSAt starts slirp4netns --target-type=bess on sock and waits until
// the socket file exists (when it existed before, that proves nothing: see
// TestBESSStaleSocket); it does not wait for the ready-fd (C 1.2.0 writes
// it only once a client has connected). At the end of the test it stops
// slirp4netns, checks nothing is left and, for ours, that the socket file
// is gone (C 1.2.0 leaves it).
func startBESSAt(t *testing.T, sock string, o SlirpOptions) *Slirp {
	t.Helper()
	o.Args = append([]string{"--target-type=bess"}, o.Args...)
	o.Positional = []string{sock}
	s := launchSlirp(t, nil, o)
	t.Cleanup(func() {
		s.stopAndCheck(t)
		if _, err := os.Lstat(sock); goImpl() && err == nil {
			t.Errorf("BESS socket %s left behind", sock)
		}
	})
	if goImpl() {
		// Ours is ready once the socket listens, before any client; the
		// socket file alone is not enough (it exists between bind and
		// listen, when a connect is refused).
		if err := s.waitReady(); err != nil {
			t.Fatalf("not ready before a client connected: %v\noutput:\n%s", err, s.Stderr.String())
		}
	}
	waitFor(t, readyTimeout, "the BESS socket "+sock, func() bool {
		_, err := os.Lstat(sock)
		return err == nil || !s.Running()
	})
	if !s.Running() {
		t.Fatalf("slirp4netns exited before listening on %s\noutput:\n%s", sock, s.Stderr.String())
	}
	return s
}

// bessClient is a raw BESS client: one Ethernet frame per datagram.
type bessClient struct {
	fd  int
	mac net.HardwareAddr
}

// dialBESS connects to the BESS socket as a client with the given MAC.
func dialBESS(t *testing.T, sock string, mac net.HardwareAddr) (*bessClient, error) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", sock, err)
	}
	tv := unix.NsecToTimeval(bessFrameTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	c := &bessClient{fd: fd, mac: mac}
	t.Cleanup(c.Close)
	return c, nil
}

// mustDialBESS is dialBESS for connections that must succeed.
func mustDialBESS(t *testing.T, s *Slirp, sock string, mac net.HardwareAddr) *bessClient {
	t.Helper()
	c, err := dialBESS(t, sock, mac)
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
	return c
}

// Close closes the connection (idempotent).
func (c *bessClient) Close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// exchange sends req until match accepts a received frame, bessTries times
// at most; a frame that reply returns non-nil for is answered with that
// (used for the gateway's ARP requests).
func (c *bessClient) exchange(req []byte, match func([]byte) bool, reply func([]byte) []byte) error {
	buf := make([]byte, 65536)
	for try := 0; try < bessTries; try++ {
		if _, err := unix.Write(c.fd, req); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		for {
			n, err := unix.Read(c.fd, buf)
			if n == 0 && err == nil {
				return errors.New("the server closed the connection")
			}
			if err != nil {
				break // timeout: send again
			}
			fr := buf[:n]
			if match(fr) {
				return nil
			}
			if reply != nil {
				if r := reply(fr); r != nil {
					if _, err := unix.Write(c.fd, r); err != nil {
						return fmt.Errorf("send reply: %w", err)
					}
				}
			}
		}
	}
	return fmt.Errorf("no answer after %d tries", bessTries)
}

// arpGateway asks for 10.0.2.2's MAC and waits for the answer.
func (c *bessClient) arpGateway() error {
	_, err := c.gatewayMAC()
	return err
}

// gatewayMAC asks for 10.0.2.2's MAC and returns it.
func (c *bessClient) gatewayMAC() (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	req := arpFrame(1, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, c.mac, bessGuestIP, nil, bessGateway)
	err := c.exchange(req, func(fr []byte) bool {
		if isARP(fr, 2) && bytes.Equal(fr[0:6], c.mac) && bytes.Equal(fr[28:32], bessGateway) {
			mac = append(net.HardwareAddr{}, fr[22:28]...)
			return true
		}
		return false
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("ARP for 10.0.2.2: %w", err)
	}
	return mac, nil
}

// pingGateway sends an ICMP echo request to 10.0.2.2 without asking for its
// MAC first (to gw) and waits for the reply addressed to c's MAC. The
// gateway may ask for our MAC first; it gets an answer.
func (c *bessClient) pingGateway(gw net.HardwareAddr) error {
	req := icmpEchoFrame(gw, c.mac, bessGuestIP, bessGateway)
	err := c.exchange(req, func(fr []byte) bool {
		return len(fr) >= 42 && bytes.Equal(fr[0:6], c.mac) && fr[12] == 0x08 && fr[13] == 0x00 &&
			fr[23] == unix.IPPROTO_ICMP && fr[34] == 0 // echo reply
	}, func(fr []byte) []byte {
		if isARP(fr, 1) && bytes.Equal(fr[38:42], bessGuestIP) {
			return arpFrame(2, fr[6:12], c.mac, bessGuestIP, fr[6:12], fr[28:32])
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ping 10.0.2.2: %w", err)
	}
	return nil
}

// closedByServer reports whether the server closes the connection (read
// returns EOF) within timeout.
func (c *bessClient) closedByServer(timeout time.Duration) bool {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, err := unix.Read(c.fd, buf)
		if n == 0 && err == nil {
			return true
		}
	}
	return false
}

// arpFrame builds an Ethernet ARP frame (op 1 request, 2 reply).
func arpFrame(op byte, dst, src net.HardwareAddr, srcIP net.IP, dstMAC net.HardwareAddr, dstIP net.IP) []byte {
	if dstMAC == nil {
		dstMAC = make(net.HardwareAddr, 6)
	}
	f := make([]byte, 0, 42)
	f = append(f, dst...)
	f = append(f, src...)
	f = append(f, 0x08, 0x06)                 // ARP
	f = append(f, 0, 1, 0x08, 0, 6, 4, 0, op) // Ethernet, IPv4, op
	f = append(f, src...)
	f = append(f, srcIP.To4()...)
	f = append(f, dstMAC...)
	return append(f, dstIP.To4()...)
}

// isARP reports whether fr is an ARP frame with operation op.
func isARP(fr []byte, op byte) bool {
	return len(fr) >= 42 && fr[12] == 0x08 && fr[13] == 0x06 && fr[21] == op
}

// icmpEchoFrame builds an Ethernet/IPv4 ICMP echo request.
func icmpEchoFrame(dst, src net.HardwareAddr, srcIP, dstIP net.IP) []byte {
	icmp := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'b', 'e', 's', 's'}
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_ICMP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	ip = append(append(ip, srcIP.To4()...), dstIP.To4()...)
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
	f := append(append(append([]byte{}, dst...), src...), 0x08, 0x00)
	return append(append(f, ip...), icmp...)
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// macOf parses a MAC address literal.
func macOf(mac string) net.HardwareAddr {
	m, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return m
}

// TestBESS: --target-type=bess serves one Ethernet frame per datagram on a
// SOCK_SEQPACKET socket (User Mode Linux's transport); the gateway answers
// ARP on it. Ours writes the ready-fd before any client connects; C 1.2.0
// after.
func TestBESS(t *testing.T) {
	t.Parallel()
	s, sock := startBESS(t, SlirpOptions{})
	if goImpl() {
		if err := s.waitReady(); err != nil {
			t.Fatalf("not ready before a client connected: %v\noutput:\n%s", err, s.Stderr.String())
		}
	}
	c := mustDialBESS(t, s, sock, macOf("02:00:00:00:00:64"))
	if !goImpl() {
		if err := s.waitReady(); err != nil {
			t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
		}
	}
	if err := c.arpGateway(); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
	fi, err := os.Lstat(sock)
	switch {
	case err != nil:
		t.Errorf("BESS socket: %v", err)
	case goImpl() && fi.Mode().Perm() != 0o600:
		t.Errorf("BESS socket %s has mode %v; want 0600 (owner only)", sock, fi.Mode().Perm())
	}
}

// TestBESSClients: a second client while one is connected, and a new
// client after the first left. Ours closes the second client at once and
// serves a new client after the first one left (a rebooted UML, with a new
// MAC: the gateway must not send to the old one); C 1.2.0 refuses both
// connections. The first client keeps working either way.
func TestBESSClients(t *testing.T) {
	t.Parallel()
	s, sock := startBESS(t, SlirpOptions{})
	first := mustDialBESS(t, s, sock, macOf("02:00:00:00:00:01"))
	if err := s.waitReady(); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
	if err := first.arpGateway(); err != nil {
		t.Fatalf("first client: %v\noutput:\n%s", err, s.Stderr.String())
	}
	second, err := dialBESS(t, sock, macOf("02:00:00:00:00:02"))
	switch {
	case goImpl() && err != nil:
		t.Fatalf("second client: %v (want a connection that is closed at once)", err)
	case goImpl() && !second.closedByServer(5*time.Second):
		t.Fatal("second client: not closed while the first one is connected")
	case !goImpl() && !errors.Is(err, syscall.ECONNREFUSED):
		t.Fatalf("second client: %v, want ECONNREFUSED", err)
	}
	if err := first.arpGateway(); err != nil {
		t.Fatalf("first client after the second: %v\noutput:\n%s", err, s.Stderr.String())
	}
	gwMAC, err := first.gatewayMAC()
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	third, err := dialBESS(t, sock, macOf("02:00:00:00:00:03"))
	if !goImpl() {
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("client after the first left: %v, want ECONNREFUSED", err)
		}
		if !s.Running() {
			t.Fatalf("exited after its client left\noutput:\n%s", s.Stderr.String())
		}
		return
	}
	if err != nil {
		t.Fatalf("client after the first left: %v\noutput:\n%s", err, s.Stderr.String())
	}
	// An echo request straight away, without ARP: the reply must reach the
	// new MAC, not the one the gateway learnt from the first client.
	if err := third.pingGateway(gwMAC); err != nil {
		t.Fatalf("client after the first left: %v\noutput:\n%s", err, s.Stderr.String())
	}
	out := s.Stderr.String()
	for _, want := range []string{"refusing another client", "client disconnected"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestBESSStaleSocket: a socket file nobody listens on (left by a killed
// run) is replaced.
func TestBESSStaleSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "bess.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd) // the file stays, stale
	s := startBESSAt(t, sock, SlirpOptions{})
	// Refused until slirp4netns has replaced the stale file.
	var c *bessClient
	waitFor(t, readyTimeout, "a connection to the replaced socket", func() bool {
		var err error
		c, err = dialBESS(t, sock, macOf("02:00:00:00:00:64"))
		return err == nil || !errors.Is(err, syscall.ECONNREFUSED) || !s.Running()
	})
	if c == nil {
		t.Fatalf("cannot connect to %s\noutput:\n%s", sock, s.Stderr.String())
	}
	if err := s.waitReady(); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
	if err := c.arpGateway(); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
}

// TestBESSBadInput: options that conflict with --target-type=bess and bad
// socket paths end slirp4netns with a message, and nothing is left.
func TestBESSBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		path       string // DIR is a new temporary directory
		want       string // in the output (both implementations)
		wantGo     string // in the output (ours)
		goImplOnly bool   // C 1.2.0 accepts it
		keep       string // a file that must survive
	}{
		{name: "configure", args: []string{"-c"}, want: "--configure conflicts with --target-type=bess"},
		{name: "netns-type", args: []string{"--netns-type=pid"}, want: "--netns-type conflicts with --target-type=bess"},
		{name: "userns-path", args: []string{"--userns-path=/proc/self/ns/user"}, want: "--userns-path conflicts with --target-type=bess"},
		{name: "missing directory", path: "DIR/missing/bess.sock", wantGo: `directory "DIR/missing" does not exist`},
		{name: "too long", path: "DIR/" + strings.Repeat("x", 110), want: "too long"},
		// C 1.2.0 unlinks whatever is at the path.
		{name: "not a socket", path: "DIR/file", wantGo: "not a socket", goImplOnly: true, keep: "DIR/file"},
	}
	for _, tc := range tests {
		if tc.goImplOnly && !goImpl() {
			t.Logf("%s: not checked against C slirp4netns (it accepts this input)", tc.name)
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			expand := func(s string) string { return strings.ReplaceAll(s, "DIR", dir) }
			path := "DIR/bess.sock"
			if tc.path != "" {
				path = tc.path
			}
			if tc.keep != "" {
				if err := os.WriteFile(expand(tc.keep), []byte("keep"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			o := SlirpOptions{Args: append([]string{"--target-type=bess"}, tc.args...), Positional: []string{expand(path)}}
			res := RunSlirpFail(t, nil, o)
			want := tc.want
			if goImpl() && tc.wantGo != "" {
				want = tc.wantGo
			}
			if want != "" && !strings.Contains(res.Stderr, expand(want)) {
				t.Errorf("output lacks %q:\n%s", expand(want), res.Stderr)
			}
			if tc.keep != "" {
				if b, err := os.ReadFile(expand(tc.keep)); err != nil || string(b) != "keep" {
					t.Errorf("%s was changed: %q, %v", expand(tc.keep), b, err)
				}
			}
		})
	}
}

// umlInit is the init script of TestBESSUML's User Mode Linux guest, run by
// busybox sh on the host's root file system (hostfs, read-only). It
// configures vec0 as the man page shows, checks the data path, serves port
// 80 once, and powers off. Each check prints a marker on the console;
// every network command is bounded by timeout(1).
const umlInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B ip link set lo up
$B ip link set vec0 up
$B ip addr add 10.0.2.100/24 dev vec0
$B ip route add default via 10.0.2.2
echo "BESS-STEP configured"
$B ping -c1 -W5 10.0.2.2 >/dev/null && echo "BESS-OK ping"
r=$(printf 'GET / HTTP/1.0\r\n\r\n' | $B timeout 10 $B nc 10.0.2.2 %[1]d)
case "$r" in *"hello from the outer namespace"*) echo "BESS-OK http";; esac
n=$(printf 'GET /blob?size=%[2]d HTTP/1.0\r\n\r\n' | $B timeout 20 $B nc 10.0.2.2 %[1]d | $B wc -c)
[ "$n" -gt %[2]d ] && echo "BESS-OK blob"
r=$($B timeout 10 $B nslookup %[3]s 10.0.2.3)
case "$r" in *%[4]s*) echo "BESS-OK dns";; esac
echo uml-served | $B timeout 20 $B nc -l -p 80 &
$B sleep 1
echo "BESS-STEP listening"
wait
echo "BESS-DONE"
$B poweroff -f
`

// umlRebootInit is the init script of the second UML boot on the same
// slirp4netns (ours waits for a new client when one leaves). This time
// vec0 is configured by DHCP: the script is also udhcpc's hook, which
// applies the lease on "bound". Then the gateway and the outer loopback.
const umlRebootInit = `#!/bin/busybox sh
B=/bin/busybox
case "$1" in
bound)
	$B ip addr add "$ip/$mask" dev "$interface"
	$B ip route add default via "$router"
	echo "BESS-OK dhcp $ip via $router"
	exit 0;;
deconfig|renew|leasefail|nak)
	exit 0;;
esac
$B mount -t proc proc /proc
$B ip link set vec0 up
$B timeout 20 $B udhcpc -i vec0 -n -q -t 5 -T 2 -s "$0"
$B ping -c1 -W5 10.0.2.2 >/dev/null && echo "BESS-OK ping"
r=$(printf 'GET / HTTP/1.0\r\n\r\n' | $B timeout 10 $B nc 10.0.2.2 %[1]d)
case "$r" in *"hello from the outer namespace"*) echo "BESS-OK http";; esac
echo "BESS-DONE"
$B poweroff -f
`

// umlChecks are the markers umlInit prints when a check passed.
var umlChecks = []string{"BESS-OK ping", "BESS-OK http", "BESS-OK blob", "BESS-OK dns", "BESS-DONE"}

// umlBlobSize is the size of the file the guest fetches over HTTP.
const umlBlobSize = 1 << 20

// startUML boots User Mode Linux (Debian's user-mode-linux package) with
// the host's root file system read-only, init, and vec0 on the BESS socket,
// as the man page's BESS example does. Its console is collected in the
// returned buffer; done is closed when it exits. It is killed at the end
// of the test if still running.
func startUML(t *testing.T, sock, init string) (console *syncBuffer, done <-chan struct{}) {
	t.Helper()
	uml, err := exec.LookPath("linux.uml")
	if err != nil {
		t.Fatalf("linux.uml (Debian package user-mode-linux, installed by scripts/install-deps): %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("the UML guest's init needs /bin/busybox (busybox-static): %v", err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "init.sh")
	if err := os.WriteFile(script, []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	// hostfs read-only ("ro", where the command line has "rw"): the
	// guest kernel runs with our credentials and must not write our files.
	// uml_dir keeps UML's per-instance directory out of $HOME.
	cmd := exec.Command(uml, "mem=128M", "root=/dev/root", "rootfstype=hostfs", "hostfs=/", "ro",
		"init="+script, "con=null", "con0=fd:0,fd:1", "uml_dir="+dir,
		"vec0:transport=bess,dst="+sock+",depth=128,gro=1")
	cmd.Env = withEnv(os.Environ(), "TMPDIR", os.TempDir()) // UML's memory file
	console = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = console, console
	// Its own process group: UML runs several host processes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", uml, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return console, exited
}

// waitConsole waits until the console shows marker; it fails the test if
// UML exits or the time runs out first.
func waitConsole(t *testing.T, console *syncBuffer, done <-chan struct{}, deadline time.Time, marker string) {
	t.Helper()
	for !strings.Contains(console.String(), marker) {
		select {
		case <-done:
			if strings.Contains(console.String(), marker) {
				return
			}
			t.Fatalf("UML exited before %q; console:\n%s", marker, console.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q from UML within %v; console:\n%s", marker, umlTimeout, console.String())
		}
	}
}

// TestBESSUML boots a real User Mode Linux guest on the BESS socket: it
// configures vec0 as the man page shows, pings the gateway, fetches a page
// and a 1 MiB file from the outer namespace's loopback through 10.0.2.2,
// resolves a name through 10.0.2.3 and serves a port that the host reaches
// through add_hostfwd; then it powers off. Ours then waits for the next
// client (C 1.2.0 keeps running without one).
func TestBESSUML(t *testing.T) {
	t.Parallel()
	s, sock := startBESS(t, SlirpOptions{API: true})
	start := time.Now()
	deadline := start.Add(umlTimeout)
	console, done := startUML(t, sock, fmt.Sprintf(umlInit, httpPort, umlBlobSize, testName, testNameAddr))
	if err := s.waitReady(); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
	AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", fwdPortBESS, 80)
	waitConsole(t, console, done, deadline, "BESS-STEP listening")
	var got string
	var err error
	served := poll(10*time.Second, func() bool {
		got, err = dialPeer(hostPort("127.0.0.1", fwdPortBESS), "")
		return strings.Contains(got, "uml-served")
	})
	if !served {
		t.Errorf("host to the guest through add_hostfwd: got %q, %v", got, err)
	}
	waitConsole(t, console, done, deadline, "reboot: System halted")
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
		t.Fatalf("UML did not exit after halting; console:\n%s", console.String())
	}
	t.Logf("UML run took %v", time.Since(start).Round(time.Millisecond))
	out := console.String()
	for _, m := range umlChecks {
		if !strings.Contains(out, m) {
			t.Errorf("UML guest: no %q; console:\n%s\nslirp4netns output:\n%s", m, out, s.Stderr.String())
		}
	}
	if !s.Running() {
		t.Fatalf("slirp4netns exited when UML powered off\noutput:\n%s", s.Stderr.String())
	}
	if !goImpl() {
		return // C 1.2.0 accepts no other client (TestBESSClients)
	}
	waitFor(t, 5*time.Second, "the engine to notice UML's disconnect", func() bool {
		return strings.Contains(s.Stderr.String(), "waiting for a new one")
	})
	// A reboot: a new UML (with a new MAC) on the same socket, by DHCP.
	deadline = time.Now().Add(umlTimeout)
	console, done = startUML(t, sock, fmt.Sprintf(umlRebootInit, httpPort))
	waitConsole(t, console, done, deadline, "reboot: System halted")
	out = console.String()
	for _, m := range []string{"BESS-OK dhcp 10.0.2.15 via 10.0.2.2", "BESS-OK ping", "BESS-OK http", "BESS-DONE"} {
		if !strings.Contains(out, m) {
			t.Errorf("UML guest after a reboot: no %q; console:\n%s\nslirp4netns output:\n%s", m, out, s.Stderr.String())
		}
	}
	t.Logf("both UML runs took %v", time.Since(start).Round(time.Millisecond))
}
