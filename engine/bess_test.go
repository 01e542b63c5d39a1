package engine

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// TestMainBESSListener: handed a listening BESS socket, the engine serves
// one client at a time, closes a second one at once, and serves a new
// client after the first one left; also under the seccomp filter (accept4
// on the listener).
func TestMainBESSListener(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testMainBESSListener(t, false) })
	t.Run("seccomp", func(t *testing.T) { testMainBESSListener(t, true) })
}

func testMainBESSListener(t *testing.T, seccomp bool) {
	p := startEngineProc(t)
	sock := filepath.Join(t.TempDir(), "bess.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.DisableDNS = true
	cfg.EnableSeccomp = seccomp
	if err := p.conn.SendBody(ipc.TypeEngineStart, 0, proto.EngineStart{Config: cfg, Link: proto.LinkBESS}, lf); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	if m := p.recv(t); m.Type != ipc.TypeReady {
		t.Fatalf("got %+v, want ready (stderr: %s)", m, p.stderr)
	}
	first := dialTestBESS(t, sock)
	arpThroughBESS(t, first, "first client")
	second := dialTestBESS(t, sock)
	if !closedWithin(second, 5*time.Second) {
		t.Fatal("a second client was not closed while the first is connected")
	}
	arpThroughBESS(t, first, "first client after the second")
	unix.Close(first)
	// The engine may see the new client before the old one's EOF; it waits
	// for that rather than refusing.
	third := dialTestBESS(t, sock)
	arpThroughBESS(t, third, "client after the first left")
	if err := p.conn.SendBody(ipc.TypeShutdown, 0, nil); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after shutdown (stderr: %s)", code, p.stderr)
	}
}

// dialTestBESS connects a SOCK_SEQPACKET client with a 1 s receive timeout;
// it is closed at the end of the test.
func dialTestBESS(t *testing.T, sock string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "bess-client")
	t.Cleanup(func() { f.Close() })
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatalf("connect %s: %v", sock, err)
	}
	tv := unix.NsecToTimeval(time.Second.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// arpThroughBESS asks for the gateway's MAC on fd and waits for the reply
// (5 tries of 1 s).
func arpThroughBESS(t *testing.T, fd int, what string) {
	t.Helper()
	plan, err := policy.PlanFor(policy.DefaultCIDR)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 0, header.EthernetMinimumSize+header.ARPSize)
	frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	frame = append(frame, guestMAC...)
	frame = append(frame, 0x08, 0x06)
	frame = append(frame, arpRequest(netip.MustParseAddr("10.0.2.100"), plan.Gateway)...)
	gw := plan.Gateway.As4()
	buf := make([]byte, 65536)
	for try := 0; try < 5; try++ {
		if _, err := unix.Write(fd, frame); err != nil {
			t.Fatalf("%s: send: %v", what, err)
		}
		for {
			n, err := unix.Read(fd, buf)
			if err != nil || n == 0 {
				break
			}
			fr := buf[:n]
			if n >= 42 && bytes.Equal(fr[:6], []byte(guestMAC)) && fr[12] == 0x08 && fr[13] == 0x06 &&
				fr[21] == 2 && bytes.Equal(fr[28:32], gw[:]) {
				return
			}
		}
	}
	t.Fatalf("%s: no ARP reply from the gateway", what)
}

// closedWithin reports whether the peer closes fd (read returns EOF)
// within d.
func closedWithin(fd int, d time.Duration) bool {
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		if n, err := unix.Read(fd, buf); n == 0 && err == nil {
			return true
		}
	}
	return false
}
