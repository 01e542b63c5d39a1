package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Host-side TCP keepalive of relayed connections (what net.Dialer sets by
// default): notice a vanished peer within minutes.
const (
	hostKeepaliveIdle     = 15 // seconds
	hostKeepaliveInterval = 15 // seconds
	hostKeepaliveCount    = 9
)

// dialHost connects a non-blocking TCP socket to dst, from local when
// valid, within timeout or until ctx ends, and returns it.
//
// It does what net.Dialer does without Go's poller: a connection to the
// host's loopback (or a peer as close) has completed by the time connect
// returns EINPROGRESS and a zero-timeout poll sees it, so the dial costs no
// goroutine wake-up and the socket needs no detaching from Go's poller
// afterwards. Only a slower peer makes it wait, in Go's poller.
func dialHost(ctx context.Context, dst netip.AddrPort, local netip.Addr, timeout time.Duration) (int, error) {
	fd, done, err := startDial(dst, local)
	if err != nil || done {
		return fd, err
	}
	nfd, err := waitConnect(ctx, fd, timeout)
	if err != nil {
		return -1, fmt.Errorf("connect %s: %w", dst, err)
	}
	return nfd, nil
}

// startDial starts dialHost's connect and reports whether it has finished
// (done, or failed: err). While it has not, the caller owns fd and waits
// for it (waitConnect).
func startDial(dst netip.AddrPort, local netip.Addr) (fd int, done bool, err error) {
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err = rawSocketFD(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, true, fmt.Errorf("socket: %w", err)
	}
	if err := prepareHostSocket(fd, local); err != nil {
		unix.Close(fd)
		return -1, true, err
	}
	err = rawConnect(fd, dst)
	switch {
	case err == nil:
		return fd, true, nil
	case errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EINTR):
	default:
		unix.Close(fd)
		return -1, true, fmt.Errorf("connect %s: %w", dst, err)
	}
	if done, err := connectDone(fd); done {
		if err != nil {
			unix.Close(fd)
			return -1, true, fmt.Errorf("connect %s: %w", dst, err)
		}
		return fd, true, nil
	}
	return fd, false, nil
}

// prepareHostSocket sets the options net.Dialer would (no Nagle,
// keepalive) and binds to local when valid.
func prepareHostSocket(fd int, local netip.Addr) error {
	opts := []struct{ level, opt, val int }{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, hostKeepaliveIdle},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, hostKeepaliveInterval},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, hostKeepaliveCount},
	}
	for _, o := range opts {
		if err := rawSetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			return fmt.Errorf("setsockopt %d/%d: %w", o.level, o.opt, err)
		}
	}
	if local.IsValid() {
		if err := unix.Bind(fd, sockaddrOf(netip.AddrPortFrom(local, 0))); err != nil {
			return fmt.Errorf("bind %s: %w", local, err)
		}
	}
	return nil
}

// connectDone reports whether a non-blocking connect has finished, and
// how.
func connectDone(fd int) (bool, error) {
	n, _, err := rawPollNow(fd, unix.POLLOUT)
	if err != nil {
		return true, fmt.Errorf("poll: %w", err)
	}
	if n == 0 {
		return false, nil
	}
	errno, err := rawGetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return true, fmt.Errorf("getsockopt SO_ERROR: %w", err)
	}
	if errno != 0 {
		return true, unix.Errno(errno)
	}
	return true, nil
}

// waitConnect waits in Go's poller for a non-blocking connect on fd to
// finish, and returns the connected socket (a duplicate of fd: the
// original is closed with the os.File that registered it there).
func waitConnect(ctx context.Context, fd int, timeout time.Duration) (int, error) {
	f := os.NewFile(uintptr(fd), "dial")
	defer f.Close()
	if err := f.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return -1, err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Now()) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cerr error
	var nfd int
	if err := rc.Write(func(s uintptr) bool {
		var done bool
		done, cerr = connectDone(int(s))
		if done && cerr == nil {
			nfd, cerr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
		}
		return done
	}); err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return nfd, nil
}

// sockaddrOf converts an address to a unix.Sockaddr.
func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
