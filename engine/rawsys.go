package engine

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw system calls for the relay's and the dialer's non-blocking calls.
// None of them can sleep, so they need not give up the P; and a normal
// system call also wakes sysmon whenever it is in its deep sleep (the
// engine went idle since), which then polls every 20 us for a millisecond
// or more: at a few thousand connections a second, sysmon never rested
// (~10 % of a CPU and a thread wake-up every 20 us in netbench's
// connection test). Measured on 2 CPUs (scripts/netab, interleaved):
// sequential connect/echo/close 4.6-5.1 -> 1.5-1.8 voluntary context
// switches and ~290 -> ~245 us of engine CPU per connection; 1-byte round
// trips 3.5-3.9 -> 1.6-1.9 switches and 100-127 -> 76-88 us of CPU (the
// p50 fell from 170-227 to 147-182 us in one run, was unchanged within
// noise in another). See also rawRead.

// rawErr is nil for errno 0, else errno.
func rawErr(errno unix.Errno) error {
	if errno != 0 {
		return errno
	}
	return nil
}

// rawSocketFD creates a socket.
func rawSocketFD(family, typ, proto int) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ), uintptr(proto))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// rawSetsockoptInt sets an int socket option.
func rawSetsockoptInt(fd, level, opt, val int) error {
	v := int32(val)
	_, _, errno := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return rawErr(errno)
}

// rawGetsockoptInt reads an int socket option.
func rawGetsockoptInt(fd, level, opt int) (int, error) {
	var v int32
	l := uint32(4)
	_, _, errno := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(v), nil
}

// rawPollNow polls one descriptor without waiting; n is 0 or 1.
func rawPollNow(fd int, events int16) (n int, revents int16, err error) {
	pfd := unix.PollFd{Fd: int32(fd), Events: events}
	var ts unix.Timespec
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, errno
		}
		return int(r), pfd.Revents, nil
	}
}

// rawEpollCtl is epoll_ctl.
func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return rawErr(errno)
}

// rawEpollPoll is epoll_wait with a zero timeout (it never sleeps).
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// rawRead reads from a non-blocking socket. Raw system calls (here and for
// the relay's small writes) skip the scheduler's bookkeeping for blocking
// calls: a loopback write that runs the peer's receive path can take long
// enough for sysmon to hand the P to another thread, a wake-up per call.
// Large writes keep that bookkeeping, so that other goroutines get the P
// while the kernel copies.
func rawRead(fd int, p []byte) (int, error) {
	for {
		r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
}

// rawWrite writes to a non-blocking socket (see writeCall).
func rawWrite(fd int, p []byte) (int, error) {
	return writeCall(unix.SYS_WRITE, fd, unsafe.Pointer(&p[0]), len(p), len(p))
}

// writeCall runs write or writev (trap) on a non-blocking socket with
// arg and n as its buffer arguments, size bytes in all, retrying on
// EINTR. Writes up to rawWriteMax bytes are raw system calls (see
// rawRead); larger ones keep the scheduler's bookkeeping, so that other
// goroutines get the P while the kernel copies.
func writeCall(trap uintptr, fd int, arg unsafe.Pointer, n, size int) (int, error) {
	call := unix.Syscall
	if size <= rawWriteMax {
		call = unix.RawSyscall
	}
	for {
		r, _, errno := call(trap, uintptr(fd), uintptr(arg), uintptr(n))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
}

// rawShutdownWrite sends the host socket's FIN; rawClose closes it. Raw
// system calls for the reason rawRead gives: both run the loopback peer's
// receive path, and neither sleeps on a non-blocking TCP socket (a
// lingering close would, but the relay never sets a linger time).
func rawShutdownWrite(fd int) error {
	_, _, errno := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return rawErr(errno)
}

func rawClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// rawConnect starts a non-blocking connect to dst as a raw system call:
// to the host's loopback, connect runs the handshake in the kernel before
// it returns, long enough for sysmon to take the P away from a normal
// system call (a thread handoff, and it keeps sysmon polling every 20 us).
// A non-blocking connect never sleeps, so the P need not be released.
func rawConnect(fd int, dst netip.AddrPort) error {
	var (
		ptr unsafe.Pointer
		n   uintptr
		sa4 unix.RawSockaddrInet4
		sa6 unix.RawSockaddrInet6
	)
	port := [2]byte{byte(dst.Port() >> 8), byte(dst.Port())}
	if dst.Addr().Is4() {
		sa4.Family = unix.AF_INET
		sa4.Port = *(*uint16)(unsafe.Pointer(&port))
		sa4.Addr = dst.Addr().As4()
		ptr, n = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		sa6.Family = unix.AF_INET6
		sa6.Port = *(*uint16)(unsafe.Pointer(&port))
		sa6.Addr = dst.Addr().As16()
		ptr, n = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(ptr), n)
	return rawErr(errno)
}
