package integration

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// arpRequest builds an Ethernet ARP request from mac/ip for target.
func arpRequest(mac net.HardwareAddr, ip, target net.IP) []byte {
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // broadcast
	f = append(f, mac...)
	f = append(f, 0x08, 0x06)                // ARP
	f = append(f, 0, 1, 0x08, 0, 6, 4, 0, 1) // Ethernet, IPv4, request
	f = append(f, mac...)
	f = append(f, ip.To4()...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	return append(f, target.To4()...)
}

// TestBESS: --target-type=bess serves one Ethernet frame per datagram on a
// SOCK_SEQPACKET socket (User Mode Linux's transport); the gateway answers
// ARP on it.
func TestBESS(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "bess.sock")
	// C slirp4netns 1.2.0 signals ready only once the client has connected.
	s := launchSlirp(t, nil, SlirpOptions{Args: []string{"--target-type=bess"}, Positional: []string{sock}})
	t.Cleanup(func() { s.stopAndCheck(t) })
	waitFor(t, readyTimeout, "the BESS socket "+sock, func() bool {
		_, err := os.Stat(sock)
		return err == nil || !s.Running()
	})
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "bess")
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatalf("connect %s: %v\noutput:\n%s", sock, err, s.Stderr.String())
	}
	if err := s.waitReady(); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, s.Stderr.String())
	}
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}
	req := arpRequest(mac, net.IPv4(10, 0, 2, 100), net.IPv4(10, 0, 2, 2))
	tv := unix.NsecToTimeval((time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for try := 0; try < 5; try++ {
		if _, err := unix.Write(fd, req); err != nil {
			t.Fatalf("send ARP request: %v", err)
		}
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				break // timeout: send again
			}
			fr := buf[:n]
			// An ARP reply to us from 10.0.2.2.
			if n >= 42 && bytes.Equal(fr[0:6], mac) && fr[12] == 0x08 && fr[13] == 0x06 &&
				fr[21] == 2 && bytes.Equal(fr[28:32], []byte{10, 0, 2, 2}) {
				return
			}
		}
	}
	t.Fatal("no ARP reply from 10.0.2.2 over the BESS socket")
}
