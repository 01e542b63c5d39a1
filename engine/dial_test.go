package engine

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialHost: a loopback connection completes (IPv4 and IPv6, with a
// bound local address), a closed port is refused.
func TestDialHost(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dst := ln.Addr().(*net.TCPAddr).AddrPort()
		fd, err := dialHost(context.Background(), dst, dst.Addr(), time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", dst, err)
		}
		sa, err := unix.Getsockname(fd)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		var local netip.Addr
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			local = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			local = netip.AddrFrom16(sa.Addr)
		}
		if local != dst.Addr() {
			t.Fatalf("local address %s, want %s", local, dst.Addr())
		}
	}
	port := closedPort(t)
	_, err := dialHost(context.Background(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), netip.Addr{}, time.Second)
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial of a closed port: %v, want ECONNREFUSED", err)
	}
}

// stuckListener returns the address of a loopback listener whose accept
// queue is full, so that a new connection attempt stays unanswered.
func stuckListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue (backlog 0 holds one connection; a second one may
	// complete its handshake too before the queue counts as full).
	for range 3 {
		c, err := net.DialTimeout("tcp", dst.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return dst
}

// TestDialHostWaits: a connection attempt nobody answers waits in Go's
// poller and ends at the timeout, or when the context ends.
func TestDialHostWaits(t *testing.T) {
	noLeaks(t)
	dst := stuckListener(t)
	_, err := dialHost(context.Background(), dst, netip.Addr{}, 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial of a stuck listener: %v, want a timeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = dialHost(ctx, dst, netip.Addr{}, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with a cancelled context: %v, want context.Canceled", err)
	}
}
