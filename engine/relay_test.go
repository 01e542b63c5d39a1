package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// hostServer accepts one connection on the host's loopback at a time and
// hands it to the test.
func hostServer(t *testing.T) (netip.AddrPort, <-chan *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan *net.TCPConn, 1024)
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort(), conns
}

// relayPair connects the guest to a host server through the engine and
// returns both ends.
func relayPair(t *testing.T, tb *testBed, srv netip.AddrPort, conns <-chan *net.TCPConn) (*gonet.TCPConn, *net.TCPConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := tb.dialTCP(ctx, netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	select {
	case h := <-conns:
		t.Cleanup(func() { h.Close() })
		return g, h
	case <-time.After(5 * time.Second):
		t.Fatal("host server saw no connection")
	}
	return nil, nil
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// TestRelayHalfClose: each side's FIN reaches the other while the other
// direction keeps working, in both orders.
func TestRelayHalfClose(t *testing.T) {
	noLeaks(t)
	srv, conns := hostServer(t)
	tb := newTestBed(t, testConfig())
	deadline := time.Now().Add(10 * time.Second)

	t.Run("host first", func(t *testing.T) {
		g, h := relayPair(t, tb, srv, conns)
		g.SetDeadline(deadline)
		h.SetDeadline(deadline)
		down := randomBytes(300<<10, 1)
		if _, err := h.Write(down); err != nil {
			t.Fatal(err)
		}
		h.CloseWrite()
		got, err := io.ReadAll(g)
		if err != nil || !bytes.Equal(got, down) {
			t.Fatalf("guest read %d bytes (%v), want %d then EOF", len(got), err, len(down))
		}
		up := randomBytes(200<<10, 2)
		go func() {
			g.Write(up)
			g.CloseWrite()
		}()
		got, err = io.ReadAll(h)
		if err != nil || !bytes.Equal(got, up) {
			t.Fatalf("host read %d bytes (%v), want %d then EOF", len(got), err, len(up))
		}
	})
	t.Run("guest first", func(t *testing.T) {
		g, h := relayPair(t, tb, srv, conns)
		g.SetDeadline(deadline)
		h.SetDeadline(deadline)
		up := randomBytes(300<<10, 3)
		go func() {
			g.Write(up)
			g.CloseWrite()
		}()
		got, err := io.ReadAll(h)
		if err != nil || !bytes.Equal(got, up) {
			t.Fatalf("host read %d bytes (%v), want %d then EOF", len(got), err, len(up))
		}
		down := randomBytes(200<<10, 4)
		go func() {
			h.Write(down)
			h.CloseWrite()
		}()
		got, err = io.ReadAll(g)
		if err != nil || !bytes.Equal(got, down) {
			t.Fatalf("guest read %d bytes (%v), want %d then EOF", len(got), err, len(down))
		}
	})
	eventually(t, 5*time.Second, "relayed connections to end", func() bool { return relayCount(tb.eng) == 0 })
}

// TestRelayReset: a reset on one side resets the other.
func TestRelayReset(t *testing.T) {
	noLeaks(t)
	srv, conns := hostServer(t)
	tb := newTestBed(t, testConfig())
	deadline := time.Now().Add(10 * time.Second)

	t.Run("host resets", func(t *testing.T) {
		g, h := relayPair(t, tb, srv, conns)
		g.SetDeadline(deadline)
		h.SetLinger(0)
		h.Close()
		_, err := io.ReadAll(g)
		if err == nil {
			t.Fatal("guest read ended cleanly, want a reset")
		}
	})
	t.Run("guest resets", func(t *testing.T) {
		g, h := relayPair(t, tb, srv, conns)
		h.SetDeadline(deadline)
		// Data the guest leaves unread makes its Close a reset: the two
		// bytes travel in one segment, the guest reads one.
		g.SetDeadline(deadline)
		if _, err := h.Write([]byte("ab")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(g, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		g.Close()
		_, err := io.ReadAll(h)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("host read: %v, want ECONNRESET", err)
		}
	})
	eventually(t, 5*time.Second, "relayed connections to end", func() bool { return relayCount(tb.eng) == 0 })
}

// TestRelayDataAndFINInOneRun: a guest FIN queued behind data that one run
// forwards still reaches the host. The relay is held while the guest sends
// both, so that their notifications come before the run begins and the run
// sees the data first; a run that stopped after writing everything it peeked
// would leave the FIN queued with nothing to wake it.
func TestRelayDataAndFINInOneRun(t *testing.T) {
	tb, g, h := relayTestPair(t, 10*time.Second)
	// One round trip first: the relay has run and is idle.
	if _, err := g.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(h, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c := onlyRelayConn(t, tb.eng)
	c.mu.Lock()
	if _, err := g.Write([]byte("hello")); err != nil {
		c.mu.Unlock()
		t.Fatal(err)
	}
	if err := g.CloseWrite(); err != nil {
		c.mu.Unlock()
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the guest's FIN to be queued", func() bool {
		return tcp.EndpointState(c.ep.State()) == tcp.StateCloseWait
	})
	c.mu.Unlock()
	got, err := io.ReadAll(h)
	if err != nil || string(got) != "hello" {
		t.Fatalf("host read %q (%v), want \"hello\" then EOF", got, err)
	}
}

// TestRelayMoreSegmentsThanOneGather: guest data queued in more segments
// than one gathered write takes all reaches the host, though the host takes
// every write whole and no notification comes after the run begins (a run
// that stopped once a write went out whole would strand the rest).
func TestRelayMoreSegmentsThanOneGather(t *testing.T) {
	tb, g, h := relayTestPair(t, 20*time.Second)
	c := onlyRelayConn(t, tb.eng)
	const segSize = 128
	const segments = gatherIovecs + 8
	want := randomBytes(segments*segSize, 5)
	c.mu.Lock()
	for i := range segments {
		if _, err := g.Write(want[i*segSize : (i+1)*segSize]); err != nil {
			c.mu.Unlock()
			t.Fatal(err)
		}
		// Each write its own segment: the next waits until the engine
		// has queued this one.
		eventually(t, 5*time.Second, "the segment to be queued", func() bool {
			var n byteCounter
			_, _ = c.ep.Read(&n, tcpip.ReadOptions{Peek: true})
			return int(n) == (i+1)*segSize
		})
	}
	c.mu.Unlock()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(h, got); err != nil {
		t.Fatalf("host read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("host read other bytes than the guest sent")
	}
}

// byteCounter counts what is written to it.
type byteCounter int

func (n *byteCounter) Write(p []byte) (int, error) {
	*n += byteCounter(len(p))
	return len(p), nil
}

// onlyRelayConn returns the engine's one relayed connection, once the
// relay has it (the guest's handshake completes before the engine hands
// the connection over).
func onlyRelayConn(t *testing.T, e *Engine) *relayConn {
	t.Helper()
	s, err := e.tcp.relay()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the connection to be relayed", func() bool { return s.count() == 1 })
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != 1 {
		t.Fatalf("%d relayed connections, want 1", len(s.conns))
	}
	for _, c := range s.conns {
		rc, ok := c.(*relayConn)
		if !ok {
			t.Fatalf("the connection is a %T, not relayed by gVisor", c)
		}
		return rc
	}
	return nil
}

// TestRelayIdleConnectionsCostNoGoroutine: idle relayed connections hold
// neither goroutines nor copy buffers.
func TestRelayIdleConnectionsCostNoGoroutine(t *testing.T) {
	noLeaks(t)
	srv, conns := hostServer(t)
	tb := newTestBed(t, testConfig())
	// One connection first, so that the relay's own goroutines exist.
	relayPair(t, tb, srv, conns)
	before := runtime.NumGoroutine()
	const n = 200
	for range n {
		g, h := relayPair(t, tb, srv, conns)
		g.SetDeadline(time.Now().Add(5 * time.Second))
		h.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := h.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(g, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := relayCount(tb.eng); got != n+1 {
		t.Fatalf("%d relayed connections, want %d", got, n+1)
	}
	// gVisor may keep a few timer goroutines; the old relay had two per
	// connection.
	if grown := runtime.NumGoroutine() - before; grown > n/10 {
		t.Fatalf("goroutines grew by %d for %d idle connections", grown, n)
	}
	if held := buffersHeld(tb.eng); held != 0 {
		t.Fatalf("%d idle connections hold a copy buffer", held)
	}
}

// TestRelayBackpressure: a host that sends more than the guest takes, and
// a guest that sends more than the host takes, lose nothing and end.
func TestRelayBackpressure(t *testing.T) {
	_, g, h := relayTestPair(t, 20*time.Second)
	down := randomBytes(8<<20, 5)
	up := randomBytes(8<<20, 6)
	errc := make(chan error, 2)
	go func() {
		_, err := h.Write(down)
		h.CloseWrite()
		errc <- err
	}()
	go func() {
		_, err := g.Write(up)
		g.CloseWrite()
		errc <- err
	}()
	// Neither side reads for a while: both directions fill up.
	time.Sleep(300 * time.Millisecond)
	gotUp := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(h)
		gotUp <- b
	}()
	gotDown, err := io.ReadAll(g)
	if err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("guest read %d bytes (%v), want %d", len(gotDown), err, len(down))
	}
	if b := <-gotUp; !bytes.Equal(b, up) {
		t.Fatalf("host read %d bytes, want %d", len(b), len(up))
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// TestRelayCloseEndsConnections: the engine's Close resets relayed
// connections and leaves no goroutine (noLeaks).
func TestRelayCloseEndsConnections(t *testing.T) {
	noLeaks(t)
	srv, conns := hostServer(t)
	tb := newTestBed(t, testConfig())
	_, h := relayPair(t, tb, srv, conns)
	h.SetDeadline(time.Now().Add(5 * time.Second))
	eventually(t, 5*time.Second, "the relay to start", func() bool { return relayCount(tb.eng) == 1 })
	tb.eng.Close()
	if _, err := io.ReadAll(h); err == nil {
		// A reset reads as an error; EOF (nil) would mean a clean close.
		t.Fatal("host side ended cleanly after engine Close, want a reset")
	}
}

// relayCount is the number of connections the engine relays.
func relayCount(e *Engine) int {
	s, err := e.tcp.relay()
	if err != nil {
		return 0
	}
	return s.count()
}

// buffersHeld counts relayed connections holding a host read buffer.
func buffersHeld(e *Engine) int {
	s, err := e.tcp.relay()
	if err != nil {
		return 0
	}
	s.mu.Lock()
	conns := make([]*relayConn, 0, len(s.conns))
	for _, c := range s.conns {
		if rc, ok := c.(*relayConn); ok {
			conns = append(conns, rc)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		c.mu.Lock()
		if c.buf != nil {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// BenchmarkIdleConnections measures the memory of relayed connections that
// are open and idle after 16 KiB went each way (issue 9's load): heap and
// goroutine stacks per connection, for the engine and the in-process guest
// stack together (the guest's share does not depend on the relay). Run
// with go test -run ^$ -bench IdleConnections -benchtime 1x ./engine/
func BenchmarkIdleConnections(b *testing.B) {
	const n = 2000
	const size = 16 << 10
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	tb := newTestBed(b, policy4Only())
	dst := netip.AddrPortFrom(tb.eng.Plan().Gateway, ln.Addr().(*net.TCPAddr).AddrPort().Port())
	data := randomBytes(size, 9)
	buf := make([]byte, size)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	guests := make([]net.Conn, 0, n)
	hosts := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range append(guests, hosts...) {
			c.Close()
		}
	}()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g, err := tb.dialTCP(ctx, dst)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		guests = append(guests, g)
		h, err := ln.AcceptTCP()
		if err != nil {
			b.Fatal(err)
		}
		hosts = append(hosts, h)
		g.SetDeadline(time.Now().Add(5 * time.Second))
		h.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := h.Write(data); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(g, buf); err != nil {
			b.Fatal(err)
		}
		if _, err := g.Write(data); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(h, buf); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the last ACKs settle
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heapB/conn")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stackB/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}

// TestRelayRoundTrips: many one-byte exchanges (each host read is short,
// so the relay takes the socket as empty without a read that fails), then
// a last message with the FIN right behind it, in both directions.
func TestRelayRoundTrips(t *testing.T) {
	tb, g, h := relayTestPair(t, 10*time.Second)
	buf := make([]byte, 1)
	for i := range 200 {
		b := []byte{byte(i)}
		if _, err := g.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(h, buf); err != nil || buf[0] != b[0] {
			t.Fatalf("exchange %d: host read %v (%v), want %v", i, buf, err, b)
		}
		if _, err := h.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(g, buf); err != nil || buf[0] != b[0] {
			t.Fatalf("exchange %d: guest read %v (%v), want %v", i, buf, err, b)
		}
	}
	if _, err := h.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	h.CloseWrite()
	if got, err := io.ReadAll(g); err != nil || string(got) != "bye" {
		t.Fatalf("guest read %q (%v), want \"bye\" then EOF", got, err)
	}
	if _, err := g.Write([]byte("ciao")); err != nil {
		t.Fatal(err)
	}
	g.CloseWrite()
	if got, err := io.ReadAll(h); err != nil || string(got) != "ciao" {
		t.Fatalf("host read %q (%v), want \"ciao\" then EOF", got, err)
	}
	eventually(t, 5*time.Second, "relayed connections to end", func() bool { return relayCount(tb.eng) == 0 })
}

// TestRelayUrgentData: a host read stops short at an urgent mark while
// data follows it; the relay must not take that short read for an empty
// socket (the event carries EPOLLPRI), or the rest would wait for the
// host's next segment. Without SO_OOBINLINE the urgent byte itself is not
// part of the stream.
func TestRelayUrgentData(t *testing.T) {
	noLeaks(t)
	srv, conns := hostServer(t)
	tb := newTestBed(t, testConfig())
	g, h := relayPair(t, tb, srv, conns)
	g.SetDeadline(time.Now().Add(10 * time.Second))
	rc, err := h.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	send := func(b []byte, flags int) {
		if err := rc.Write(func(fd uintptr) bool {
			serr = unix.Send(int(fd), b, flags)
			return true
		}); err != nil || serr != nil {
			t.Fatalf("send: %v %v", err, serr)
		}
	}
	send([]byte("abc"), 0)
	send([]byte("X"), unix.MSG_OOB)
	send([]byte("def"), 0)
	got := make([]byte, 6)
	if _, err := io.ReadFull(g, got); err != nil || string(got) != "abcdef" {
		t.Fatalf("guest read %q (%v), want \"abcdef\"", got, err)
	}
}

// relayTestPair checks for leaked goroutines, starts a host server and an
// engine test bed, and returns the bed and one relayed connection's guest
// and host ends, both with a deadline d from now (a hang guard).
func relayTestPair(t *testing.T, d time.Duration) (*testBed, *gonet.TCPConn, *net.TCPConn) {
	t.Helper()
	noLeaks(t)
	srv, conns := hostServer(t)
	tb := newTestBed(t, testConfig())
	g, h := relayPair(t, tb, srv, conns)
	deadline := time.Now().Add(d)
	g.SetDeadline(deadline)
	h.SetDeadline(deadline)
	return tb, g, h
}
