package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// pair returns a connected Conn and a raw peer fd that tests write
// arbitrary datagrams to (or adopt as a second Conn).
func pair(t testing.TB) (*Conn, *os.File) {
	t.Helper()
	c, peer, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		peer.Close()
	})
	return c, peer
}

// conns returns both ends as Conns.
func conns(t testing.TB) (*Conn, *Conn) {
	t.Helper()
	a, peer := pair(t)
	b, err := FromFile(peer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// sendRaw writes one datagram with fds attached, bypassing Send's checks.
func sendRaw(t testing.TB, peer *os.File, data []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	rc, err := peer.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Sendmsg(int(fd), data, oob, nil, 0) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("sendmsg: %v", serr)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// devNulls opens n descriptors of /dev/null, closed when the test ends.
func devNulls(t testing.TB, n int) []int {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return fds
}

func TestRoundTrip(t *testing.T) {
	a, b := conns(t)
	fwd := proto.Forward{ID: 7}
	if err := a.SendBody(TypeAddForward, 42, fwd); err != nil {
		t.Fatal(err)
	}
	m, files, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != TypeAddForward || m.Seq != 42 || len(files) != 0 {
		t.Fatalf("got %+v with %d files", m, len(files))
	}
	var got proto.Forward
	if err := m.Decode(&got); err != nil || got.ID != 7 {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	// And back, with an error text and no body.
	if err := b.Send(Message{Type: TypeReply, Seq: 42, Error: "no such forward"}); err != nil {
		t.Fatal(err)
	}
	m, _, err = a.Recv()
	if err != nil || m.Type != TypeReply || m.Error != "no such forward" || m.Body != nil {
		t.Fatalf("reply: %+v, %v", m, err)
	}
}

func TestDecodeWrongType(t *testing.T) {
	m := Message{Type: TypeTap, Body: json.RawMessage(`{"name": 12}`)}
	var info proto.TapInfo
	err := m.Decode(&info)
	if err == nil || !strings.Contains(err.Error(), TypeTap) {
		t.Fatalf("decode of a wrongly typed body: %v, want an error naming the message type", err)
	}
}

// TestPassFD: a pipe's write end crosses the socket; what the receiver
// writes to it arrives; the received copy is close-on-exec; the sender's
// non-blocking mode is untouched.
func TestPassFD(t *testing.T) {
	a, b := conns(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := a.SendBody(TypeTap, 0, proto.TapInfo{}, w); err != nil {
		t.Fatal(err)
	}
	if fl, err := unix.FcntlInt(uintptr(rawFD(t, w)), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("sender's pipe lost O_NONBLOCK (flags %#x, %v)", fl, err)
	}
	_, files, err := b.Recv()
	if err != nil || len(files) != 1 {
		t.Fatalf("recv: %d files, %v", len(files), err)
	}
	defer files[0].Close()
	if fl, err := unix.FcntlInt(uintptr(rawFD(t, files[0])), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("received fd is not close-on-exec (flags %#x, %v)", fl, err)
	}
	if _, err := files[0].Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read through the passed fd: %q, %v", buf, err)
	}
}

func rawFD(t *testing.T, f *os.File) int {
	t.Helper()
	fds, err := rawFDs([]*os.File{f})
	if err != nil {
		t.Fatal(err)
	}
	return fds[0]
}

func TestRecvEOF(t *testing.T) {
	c, peer := pair(t)
	peer.Close()
	if _, _, err := c.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("recv after the peer closed: %v, want EOF", err)
	}
}

// TestCloseUnblocksRecv: Close makes a blocked Recv return.
func TestCloseUnblocksRecv(t *testing.T) {
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Recv()
		done <- err
	}()
	c.Close()
	if err := <-done; err == nil {
		t.Fatal("recv on a closed conn returned no error")
	}
}

func TestSendLimits(t *testing.T) {
	a, _ := conns(t)
	big := Message{Type: TypeError, Error: strings.Repeat("x", MaxMessage)}
	if err := a.Send(big); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized send: %v, want an error", err)
	}
	files := make([]*os.File, maxFDs+1)
	for i := range files {
		files[i] = os.Stdin
	}
	if err := a.Send(Message{Type: TypeTap}, files...); err == nil {
		t.Errorf("send of %d fds: no error", len(files))
	}
}

// TestRecvHostile: datagrams a broken or hostile peer may send. Each is an
// error (never a panic), leaks no descriptor, and the connection still
// carries the next good message.
func TestRecvHostile(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		fds  int
	}{
		{"garbage", []byte("\x00\xffnot json"), 0},
		{"garbage with fds", []byte("{"), 3},
		{"wrong types", []byte(`{"type": 5, "seq": "x"}`), 1},
		{"huge seq", []byte(`{"type":"reply","seq":1e999}`), 0},
		{"too many fds", []byte(`{"type":"tap"}`), maxFDs + 4},
		{"deeply nested", append(bytes.Repeat([]byte("["), 100000), bytes.Repeat([]byte("]"), 100000)...), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			fds := devNulls(t, tc.fds)
			before := openFDs(t)
			sendRaw(t, peer, tc.data, fds...)
			m, files, err := c.Recv()
			closeAll(files)
			if err == nil {
				t.Errorf("recv: %+v with %d files, want an error", m, len(files))
			}
			if after := openFDs(t); after != before {
				t.Errorf("open descriptors: %d before, %d after a rejected message", before, after)
			}
			sendRaw(t, peer, []byte(`{"type":"ready"}`))
			if m, _, err := c.Recv(); err != nil || m.Type != TypeReady {
				t.Errorf("next message after the bad one: %+v, %v", m, err)
			}
		})
	}
}

// TestRecvOversized: a datagram larger than MaxMessage is rejected as
// truncated (its fds closed) and the connection goes on. Unprivileged, the
// kernel's send buffer limit already refuses such a datagram; as root the
// limit is raised with SO_SNDBUFFORCE so that Recv's check is reached.
func TestRecvOversized(t *testing.T) {
	c, peer := pair(t)
	data := bytes.Repeat([]byte("a"), MaxMessage+1)
	rc, err := peer.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var forceErr, sendErr error
	fds := devNulls(t, 2)
	before := openFDs(t)
	err = rc.Control(func(fd uintptr) {
		forceErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*MaxMessage)
		sendErr = unix.Sendmsg(int(fd), data, unix.UnixRights(fds...), nil, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if forceErr != nil {
		if !errors.Is(sendErr, unix.EMSGSIZE) {
			t.Fatalf("unprivileged send of %d bytes: %v, want EMSGSIZE", len(data), sendErr)
		}
		return
	}
	if sendErr != nil {
		t.Fatalf("send of %d bytes with SO_SNDBUFFORCE: %v", len(data), sendErr)
	}
	if m, files, err := c.Recv(); err == nil || !strings.Contains(err.Error(), "truncated") {
		closeAll(files)
		t.Errorf("recv of an oversized datagram: %+v, %v; want a truncation error", m, err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("open descriptors: %d before, %d after the oversized message", before, after)
	}
	sendRaw(t, peer, []byte(`{"type":"ready"}`))
	if m, _, err := c.Recv(); err != nil || m.Type != TypeReady {
		t.Errorf("next message after the oversized one: %+v, %v", m, err)
	}
}

// TestConcurrentSend: Sends from many goroutines arrive whole.
func TestConcurrentSend(t *testing.T) {
	a, b := conns(t)
	const senders, each = 8, 100
	body := proto.Forward{ID: 1}
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for range each {
				if err := a.SendBody(TypeAddForward, 1, body); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	got := make(chan int, 1)
	go func() {
		n := 0
		for n < senders*each {
			m, _, err := b.Recv()
			if err != nil || m.Type != TypeAddForward {
				break
			}
			n++
		}
		got <- n
	}()
	wg.Wait()
	if n := <-got; n != senders*each {
		t.Fatalf("received %d whole messages, want %d", n, senders*each)
	}
}

// FuzzRecv feeds arbitrary datagrams (with up to a few fds) to Recv: it
// must return a message or an error, never panic, and never leak a
// descriptor; a message it accepts must survive Send/Recv unchanged.
func FuzzRecv(f *testing.F) {
	for _, seed := range []string{
		`{"type":"ready"}`,
		`{"type":"reply","seq":3,"error":"x"}`,
		`{"type":"add-forward","seq":1,"body":{"id":1,"proto":"tcp"}}`,
		`{"type":"engine-start","body":{"config":{"mtu":1500}}}`,
		`{"type":`, `null`, `[]`, `{"body":"\u0000"}`, "",
	} {
		f.Add([]byte(seed), uint8(0))
		f.Add([]byte(seed), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, nfds uint8) {
		if len(data) == 0 && nfds == 0 {
			return // an empty datagram without fds is EOF by design
		}
		c, peer := pair(t)
		fds := devNulls(t, int(nfds%(maxFDs+3)))
		before := openFDs(t)
		sendRaw(t, peer, data, fds...)
		m, files, err := c.Recv()
		closeAll(files)
		if after := openFDs(t); after != before {
			t.Fatalf("open descriptors: %d before, %d after (err %v)", before, after, err)
		}
		if err != nil {
			return
		}
		if len(files) > maxFDs {
			t.Fatalf("accepted %d fds, limit %d", len(files), maxFDs)
		}
		// Whatever body it carries, decoding into each protocol type must
		// not panic.
		for _, v := range []any{&proto.HelperConfig{}, &proto.TapInfo{}, &proto.EngineStart{}, &proto.Forward{}} {
			_ = m.Decode(v)
		}
		a, b := conns(t)
		if err := a.Send(m); err != nil {
			return // e.g. re-encoding grew it past MaxMessage
		}
		m2, _, err := b.Recv()
		if err != nil {
			t.Fatalf("re-sent message not received: %v", err)
		}
		if m2.Type != m.Type || m2.Seq != m.Seq || m2.Error != m.Error || !jsonEqual(m2.Body, m.Body) {
			t.Fatalf("round trip changed the message: %+v -> %+v", m, m2)
		}
	})
}

// jsonEqual compares two JSON texts by value (re-encoding may reorder or
// re-space them).
func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	ea, _ := json.Marshal(va)
	eb, _ := json.Marshal(vb)
	return bytes.Equal(ea, eb)
}
