package engine

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The raw system call helpers behave like their x/sys counterparts.
func TestRawSyscalls(t *testing.T) {
	fd, err := rawSocketFD(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(fd)
	if err := rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 7); err != nil {
		t.Fatalf("setsockopt: %v", err)
	}
	if v, err := rawGetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT); err != nil || v != 7 {
		t.Fatalf("getsockopt = %d, %v; want 7", v, err)
	}
	if err := rawSetsockoptInt(-1, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != unix.EBADF {
		t.Fatalf("setsockopt on a bad fd: %v, want EBADF", err)
	}

	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if n, _, err := rawPollNow(p[0], unix.POLLIN); err != nil || n != 0 {
		t.Fatalf("poll of an empty pipe = %d, %v", n, err)
	}

	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	putConnID(&ev, 1<<40|5)
	if err := rawEpollCtl(epfd, unix.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		t.Fatalf("epoll_ctl: %v", err)
	}
	events := make([]unix.EpollEvent, 4)
	if n, err := rawEpollPoll(epfd, events); err != nil || n != 0 {
		t.Fatalf("epoll_wait with nothing ready = %d, %v", n, err)
	}
	if _, err := unix.Write(p[1], []byte{1}); err != nil {
		t.Fatal(err)
	}
	if n, rev, err := rawPollNow(p[0], unix.POLLIN); err != nil || n != 1 || rev&unix.POLLIN == 0 {
		t.Fatalf("poll of a readable pipe = %d, %#x, %v", n, rev, err)
	}
	n, err := rawEpollPoll(epfd, events)
	if err != nil || n != 1 || connIDOf(&events[0]) != 1<<40|5 {
		t.Fatalf("epoll_wait = %d, %v (id %#x)", n, err, connIDOf(&events[0]))
	}
}
