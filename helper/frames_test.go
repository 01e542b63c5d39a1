package helper

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTapCarriesFrames proves that the fd OpenTap returns is attached to
// the configured TAP in the target and that the virtio-net header is there
// (10 bytes) exactly when TapInfo says so: it writes an ARP request for the
// guest address (10.0.2.100) and waits for the kernel's reply.
func TestTapCarriesFrames(t *testing.T) {
	for _, tc := range []struct {
		name           string
		disableOffload bool
	}{
		{"vnet header", false},
		{"plain", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, false)
			cfg := defaultConfig()
			cfg.Configure, cfg.DisableOffload = true, tc.disableOffload
			tap, info := openTapT(t, Request{NetnsPath: tg.netnsPath(), Config: cfg})
			defer tap.Close()
			if info.VnetHdr == tc.disableOffload {
				t.Fatalf("VnetHdr = %v with DisableOffload = %v", info.VnetHdr, tc.disableOffload)
			}
			hdr := 0
			if info.VnetHdr {
				hdr = vnetHdrLen
			}
			gwMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
			frame := append(make([]byte, hdr), arpRequest(gwMAC, net.IPv4(10, 0, 2, 2), net.IPv4(10, 0, 2, 100))...)
			if _, err := tap.Write(frame); err != nil {
				t.Fatalf("write ARP request: %v", err)
			}
			if !awaitARPReply(t, int(tap.Fd()), hdr, gwMAC) {
				t.Fatal("no ARP reply for 10.0.2.100 from the target")
			}
		})
	}
}

// arpRequest builds a broadcast Ethernet ARP request from sha/spa for tpa.
func arpRequest(sha net.HardwareAddr, spa, tpa net.IP) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	b.Write(sha)
	binary.Write(&b, binary.BigEndian, []uint16{0x0806, 1, 0x0800})
	b.Write([]byte{6, 4, 0, 1})
	b.Write(sha)
	b.Write(spa.To4())
	b.Write(make([]byte, 6))
	b.Write(tpa.To4())
	return b.Bytes()
}

// awaitARPReply reads frames for up to 3 s and reports whether an ARP reply
// addressed to mac arrived. The TAP may also carry IPv6 noise, skipped.
func awaitARPReply(t *testing.T, fd, hdr int, mac net.HardwareAddr) bool {
	t.Helper()
	buf := make([]byte, 70000)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			t.Fatalf("poll tap: %v", err)
		}
		if n == 0 {
			continue
		}
		n, err = unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read tap: %v", err)
		}
		f := buf[:n]
		if len(f) < hdr+42 {
			continue
		}
		f = f[hdr:]
		if bytes.Equal(f[0:6], mac) && binary.BigEndian.Uint16(f[12:14]) == 0x0806 &&
			binary.BigEndian.Uint16(f[20:22]) == 2 && net.IP(f[28:32]).Equal(net.IPv4(10, 0, 2, 100)) {
			return true
		}
	}
	return false
}
