package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
)

// The TCP fast path's test bed: the engine on a link.Endpoint (BESS mode:
// no virtio-net header, so every frame is MTU-sized with full checksums)
// on one SOCK_SEQPACKET socketpair, the guest a gVisor stack on a second
// link.Endpoint on another, and between them a shim that copies frames
// and can drop some of them. The host side is a listener on 127.0.0.1 in
// this process; the guest reaches it as the gateway, 10.0.2.2.
//
//	engine <-> link.Endpoint =sp1= shim =sp2= link.Endpoint <-> guest stack

// fpShim copies frames between the engine's socketpair and the guest's,
// dropping every nth frame that carries TCP payload in a direction whose
// drop interval is set (0: none). Only payload frames are dropped, so
// handshakes, FINs and ACKs always arrive and no stray segment of a
// finished connection reaches gVisor.
type fpShim struct {
	eng, guest   *os.File // our ends of the two socketpairs
	dropToGuest  atomic.Int64
	dropToEngine atomic.Int64
	// synsToGuest is how many SYNs (without ACK) to the guest to drop.
	synsToGuest atomic.Int64
	// bareToGuest counts TCP frames without payload to the guest (ACKs,
	// window probes); dropped counts the frames dropped.
	bareToGuest atomic.Int64
	dropped     atomic.Int64
	rstToGuest  atomic.Int64
	tcpToGuest  atomic.Int64
	// trace, if set, sees every TCP frame (debugging: FPTRACE=1 logs
	// those without payload or with SYN, FIN or RST, FPTRACE=2 all).
	trace func(toGuest bool, fr []byte)
	wg    sync.WaitGroup
}

func newFPShim(t testing.TB, trace func(toGuest bool, fr []byte)) (s *fpShim, engFD, guestFD int) {
	t.Helper()
	engFD, a, err := linktest.SeqpacketPair()
	if err != nil {
		t.Fatal(err)
	}
	guestFD, b, err := linktest.SeqpacketPair()
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range []int{a, b} {
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	s = &fpShim{eng: os.NewFile(uintptr(a), "shim-engine"), guest: os.NewFile(uintptr(b), "shim-guest"), trace: trace}
	s.wg.Add(2)
	go s.move(s.eng, s.guest, &s.dropToGuest, true)
	go s.move(s.guest, s.eng, &s.dropToEngine, false)
	return s, engFD, guestFD
}

// move copies frames from one socket to the other until either closes.
func (s *fpShim) move(from, to *os.File, dropEvery *atomic.Int64, toGuest bool) {
	defer s.wg.Done()
	buf := make([]byte, 1<<16)
	var n int64
	for {
		m, err := from.Read(buf)
		if err != nil {
			return
		}
		fr := buf[:m]
		payload, isTCP := tcpPayloadLen(fr)
		if isTCP && payload == 0 && toGuest {
			s.bareToGuest.Add(1)
		}
		if isTCP && toGuest {
			s.tcpToGuest.Add(1)
		}
		if isTCP && toGuest && tcpFlagsOf(fr)&header.TCPFlagRst != 0 {
			s.rstToGuest.Add(1)
		}
		if s.trace != nil && isTCP {
			s.trace(toGuest, fr)
		}
		if toGuest && isTCP && tcpFlagsOf(fr)&(header.TCPFlagSyn|header.TCPFlagAck) == header.TCPFlagSyn && s.synsToGuest.Add(-1) >= 0 {
			s.dropped.Add(1)
			continue
		}
		if every := dropEvery.Load(); every > 0 && isTCP && payload > 0 {
			n++
			if n%every == 0 {
				s.dropped.Add(1)
				continue
			}
		}
		if _, err := to.Write(fr); err != nil {
			return
		}
	}
}

func (s *fpShim) close() {
	s.eng.Close()
	s.guest.Close()
	s.wg.Wait()
}

// tcpPayloadLen returns the TCP payload length of an Ethernet frame and
// whether it is an IPv4 or IPv6 TCP segment at all.
func tcpPayloadLen(fr []byte) (int, bool) {
	if len(fr) < ethLen+header.IPv4MinimumSize {
		return 0, false
	}
	var ipHL, ipLen int
	switch binary.BigEndian.Uint16(fr[12:14]) {
	case uint16(header.IPv4ProtocolNumber):
		ip := header.IPv4(fr[ethLen:])
		if ip.Protocol() != uint8(header.TCPProtocolNumber) {
			return 0, false
		}
		ipHL, ipLen = int(ip.HeaderLength()), int(ip.TotalLength())
	case uint16(header.IPv6ProtocolNumber):
		if len(fr) < ethLen+header.IPv6MinimumSize {
			return 0, false
		}
		ip := header.IPv6(fr[ethLen:])
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return 0, false
		}
		ipHL, ipLen = header.IPv6MinimumSize, header.IPv6MinimumSize+int(ip.PayloadLength())
	default:
		return 0, false
	}
	if len(fr) < ethLen+ipHL+header.TCPMinimumSize {
		return 0, false
	}
	th := header.TCP(fr[ethLen+ipHL:])
	return ipLen - ipHL - int(th.DataOffset()), true
}

// tcpFlagsOf returns the TCP flags of a frame tcpPayloadLen called TCP.
func tcpFlagsOf(fr []byte) header.TCPFlags {
	off := ethLen + header.IPv6MinimumSize
	if header.Ethernet(fr).Type() == header.IPv4ProtocolNumber {
		off = ethLen + int(header.IPv4(fr[ethLen:]).HeaderLength())
	}
	return header.TCP(fr[off:]).Flags()
}

// fpBed is the fast path's test bed.
type fpBed struct {
	eng   *Engine
	guest *stack.Stack
	shim  *fpShim
	eep   *link.Endpoint
	ln    *net.TCPListener
	port  uint16
}

// newFPBed starts the bed; the listener on 127.0.0.1 is not accepted
// from (tests call accept).
func newFPBed(t testing.TB, opts ...Option) *fpBed {
	t.Helper()
	var trace func(toGuest bool, fr []byte)
	if os.Getenv("FPTRACE") != "" {
		trace = func(toGuest bool, fr []byte) {
			if header.Ethernet(fr).Type() != header.IPv4ProtocolNumber {
				return
			}
			ip := header.IPv4(fr[ethLen:])
			th := header.TCP(ip.Payload())
			if th.Flags()&(header.TCPFlagRst|header.TCPFlagFin|header.TCPFlagSyn) != 0 || len(th.Payload()) == 0 || os.Getenv("FPTRACE") == "2" {
				t.Logf("%s toGuest=%v %d->%d %v seq %d ack %d wnd %d len %d", time.Now().Format("05.000000"), toGuest, th.SourcePort(), th.DestinationPort(), th.Flags(), th.SequenceNumber(), th.AckNumber(), th.WindowSize(), len(th.Payload()))
			}
		}
	}
	shim, engFD, guestFD := newFPShim(t, trace)
	// As the engine runs it (engine/main.go): the host sockets' events
	// are then mostly handled by the link's reader (relaySched.pollOnce).
	eep, err := link.New(engFD, link.Options{MTU: 1500, Address: GatewayMAC, BusyPoll: link.DefaultBusyPoll})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(testConfig(), eep, append([]Option{WithoutServices(), WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	gep, err := link.New(guestFD, link.Options{MTU: 1500, Address: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	b := &fpBed{eng: eng, shim: shim, eep: eep}
	b.guest = newGuestStack(t, gep, eng.Plan())
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b.ln = ln
	b.port = uint16(ln.Addr().(*net.TCPAddr).Port)
	t.Cleanup(b.close)
	return b
}

func (b *fpBed) close() {
	b.ln.Close()
	b.guest.Close()
	b.guest.Wait()
	b.eng.Close()
	b.shim.close()
}

// dial connects from the guest to the listener (through 10.0.2.2) and
// returns the connection with its gVisor endpoint. The guest's connect is
// the one the engine makes for a forward through gVisor (dialGuestTCP),
// from the guest's address.
func (b *fpBed) dial(t testing.TB, port uint16) (*gonet.TCPConn, tcpip.Endpoint, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ep, wq, err := dialGuestTCP(ctx, b.guest, b.eng.Plan().Guest, netip.AddrPortFrom(fastGW4, port))
	if err != nil {
		return nil, nil, err
	}
	return gonet.NewTCPConn(wq, ep), ep, nil
}

// connect dials and accepts: the guest's and the host's ends of one
// connection, with deadlines that bound the test.
func (b *fpBed) connect(t testing.TB) (*gonet.TCPConn, tcpip.Endpoint, *net.TCPConn) {
	t.Helper()
	type accepted struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan accepted, 1)
	b.ln.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		c, err := b.ln.AcceptTCP()
		ch <- accepted{c, err}
	}()
	gc, ep, err := b.dial(t, b.port)
	if err != nil {
		t.Fatalf("guest dial: %v", err)
	}
	a := <-ch
	if a.err != nil {
		gc.Close()
		t.Fatalf("accept: %v", a.err)
	}
	deadline := time.Now().Add(20 * time.Second)
	gc.SetDeadline(deadline)
	a.c.SetDeadline(deadline)
	t.Cleanup(func() { gc.Close(); a.c.Close() })
	return gc, ep, a.c
}

// conns returns the fast path's connections.
func (b *fpBed) conns() []*fastConn {
	f := b.eng.fast
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*fastConn, 0, len(f.conns))
	for _, c := range f.conns {
		out = append(out, c)
	}
	return out
}

// only returns the single fast-path connection.
func (b *fpBed) only(t testing.TB) *fastConn {
	t.Helper()
	cs := b.conns()
	if len(cs) != 1 {
		t.Fatalf("%d fast-path connections, want 1", len(cs))
	}
	return cs[0]
}

// inspect runs fn on c under its lock.
func inspect[T any](c *fastConn, fn func(c *fastConn) T) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fn(c)
}

// checkFastOnly fails t if a gVisor TCP endpoint received a segment, or
// if the relay holds a gVisor-relayed connection: the traffic must have
// gone through the fast path only. (gVisor may have answered segments of
// connections the fast path finished with resets: the guest's ACKs of
// data retransmitted to it after the end, say.)
func (b *fpBed) checkFastOnly(t testing.TB) {
	t.Helper()
	if rx := b.eng.stack.Stats().TCP.ValidSegmentsReceived.Value(); rx != 0 {
		t.Errorf("gVisor's TCP endpoints received %d segments: not all traffic took the fast path", rx)
	}
	if s := b.eng.tcp.sched.Load(); s != nil {
		s.mu.Lock()
		for _, c := range s.conns {
			if _, ok := c.(*relayConn); ok {
				t.Errorf("a gVisor relay connection exists")
			}
		}
		s.mu.Unlock()
	}
}

// waitGone waits until the fast path has no connection left.
func (b *fpBed) waitGone(t testing.TB) {
	t.Helper()
	eventually(t, 10*time.Second, "fast-path connections to end", func() bool { return b.eng.fast.count() == 0 })
}

// pattern is n deterministic pseudo-random bytes.
func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// sendAll writes data to w and closes its write side, reporting on errc.
func sendAll(w io.Writer, data []byte, closeWrite func() error, errc chan<- error) {
	_, err := w.Write(data)
	if err == nil {
		err = closeWrite()
	}
	errc <- err
}

// recvSum reads r to EOF and returns the byte count and SHA-256.
func recvSum(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

// fpDrops are the loss patterns of the transfer tests: none, every 37th
// payload frame to the guest, every 499th from it, and both. Losses from
// the guest are rarer: gVisor's guest recovers from them more slowly.
var fpDrops = []struct {
	name              string
	toGuest, toEngine int64
}{
	{name: "clean"},
	{name: "drops to guest", toGuest: 37},
	{name: "drops to engine", toEngine: 499},
	{name: "drops", toGuest: 37, toEngine: 499},
}

// TestTCPFastTransfer: 8 MiB each way at once arrive intact, through the
// fast path only, without and with frames lost in either direction
// (retransmission on duplicate ACKs or timeout to the guest, gaps from the
// guest).
func TestTCPFastTransfer(t *testing.T) {
	for _, tc := range fpDrops {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			b := newFPBed(t)
			b.shim.dropToGuest.Store(tc.toGuest)
			b.shim.dropToEngine.Store(tc.toEngine)
			gc, _, hc := b.connect(t)
			b.only(t)
			exchange(t, gc, hc, 8<<20)
			if (tc.toGuest > 0 || tc.toEngine > 0) && b.shim.dropped.Load() == 0 {
				t.Error("the shim dropped nothing")
			}
			t.Logf("dropped %d frames", b.shim.dropped.Load())
			b.closeBoth(t, gc, hc)
		})
	}
}

// exchange sends size bytes each way between the guest's end gc and the
// host's end hc at once, each side closing its write side after its data,
// and checks what arrived.
func exchange(t *testing.T, gc, hc halfCloser, size int) {
	t.Helper()
	up, down := pattern(size, 1), pattern(size, 2)
	errc := make(chan error, 2)
	go sendAll(gc, up, gc.CloseWrite, errc)
	go sendAll(hc, down, hc.CloseWrite, errc)
	type got struct {
		n   int64
		sum [32]byte
		err error
	}
	gotc := make(chan got, 1)
	go func() {
		n, sum, err := recvSum(hc)
		gotc <- got{n, sum, err}
	}()
	n, sum, err := recvSum(gc)
	if err != nil || n != int64(size) || sum != sha256.Sum256(down) {
		t.Errorf("guest received %d bytes (err %v), sum match %v; want %d", n, err, sum == sha256.Sum256(down), size)
	}
	g := <-gotc
	if g.err != nil || g.n != int64(size) || g.sum != sha256.Sum256(up) {
		t.Errorf("host received %d bytes (err %v), sum match %v; want %d", g.n, g.err, g.sum == sha256.Sum256(up), size)
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Errorf("send: %v", err)
		}
	}
}

// TestTCPFastHalfClose: either side may close its direction first; the
// other direction still works, and the connection ends once both closed.
func TestTCPFastHalfClose(t *testing.T) {
	// halfClose writes msg from first and shuts its write side; second
	// reads it to EOF, answers after the FIN and closes.
	halfClose := func(t *testing.T, first, second halfCloser, msg, answer string) {
		mustWrite(t, first, msg)
		if err := first.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAllString(t, second); got != msg {
			t.Fatalf("read %q, want %q", got, msg)
		}
		mustWrite(t, second, answer)
		second.Close()
		if got := readAllString(t, first); got != answer {
			t.Fatalf("read %q, want %q", got, answer)
		}
	}
	for _, guestFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "guest first", false: "host first"}[guestFirst], func(t *testing.T) {
			noLeaks(t)
			b := newFPBed(t)
			gc, _, hc := b.connect(t)
			b.only(t)
			if guestFirst {
				halfClose(t, gc, hc, "request", "answer after the guest's FIN")
			} else {
				halfClose(t, hc, gc, "banner", "answer after the host's FIN")
			}
			b.waitGone(t)
			b.checkFastOnly(t)
		})
	}
}

// halfCloser is a TCP connection that can shut its write side.
type halfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

func mustWrite(t testing.TB, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readAllString(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v (after %q)", err, b)
	}
	return string(b)
}

// TestTCPFastReset: a reset on either side reaches the other.
func TestTCPFastReset(t *testing.T) {
	t.Run("guest abort", func(t *testing.T) {
		noLeaks(t)
		b := newFPBed(t)
		gc, ep, hc := b.connect(t)
		mustWrite(t, gc, "x")
		buf := make([]byte, 1)
		if _, err := io.ReadFull(hc, buf); err != nil {
			t.Fatal(err)
		}
		ep.Abort()
		_, err := hc.Read(buf)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("host read after the guest's reset: %v, want ECONNRESET", err)
		}
		b.waitGone(t)
		b.checkFastOnly(t)
	})
	t.Run("host linger 0", func(t *testing.T) {
		noLeaks(t)
		b := newFPBed(t)
		gc, _, hc := b.connect(t)
		mustWrite(t, hc, "x")
		buf := make([]byte, 1)
		if _, err := io.ReadFull(gc, buf); err != nil {
			t.Fatal(err)
		}
		if err := hc.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		hc.Close()
		_, err := gc.Read(buf)
		if err == nil || !strings.Contains(err.Error(), "reset") {
			t.Fatalf("guest read after the host's reset: %v, want a reset", err)
		}
		b.waitGone(t)
		b.checkFastOnly(t)
	})
}

// TestTCPFastRefused: a guest connect to a closed host port fails with
// "connection refused", answered by the fast path.
func TestTCPFastRefused(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	before := b.eng.stats.TCPRefused.Load()
	_, _, err := b.dial(t, closedPort(t))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial of a closed port: %v, want connection refused", err)
	}
	if b.eng.stats.TCPRefused.Load() != before+1 {
		t.Error("TCPRefused not counted")
	}
	b.waitGone(t)
	b.checkFastOnly(t)
}

// TestTCPFastHostStall: a host that stops reading closes the window to the
// guest (the engine holds fastRcvCap bytes and announces zero); the guest
// probes, and once the host reads again everything arrives intact.
func TestTCPFastHostStall(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	gc, _, hc := b.connect(t)
	c := b.only(t)
	// More than the host sockets' buffers take (tcp_rmem and tcp_wmem
	// autotuning: up to 6 + 4 MiB) plus fastRcvCap. (A small SO_RCVBUF
	// would need less, but Linux then stalls loopback for seconds: the
	// receiver prunes and the sender backs off.)
	const size = 16 << 20
	data := pattern(size, 3)
	errc := make(chan error, 1)
	var sent atomic.Int64
	go func() {
		var err error
		for off := 0; off < size && err == nil; off += 64 << 10 {
			_, err = gc.Write(data[off : off+64<<10])
			sent.Add(64 << 10)
		}
		if err == nil {
			err = gc.CloseWrite()
		}
		errc <- err
	}()
	eventually(t, 10*time.Second, "the window to the guest to close", func() bool {
		return inspect(c, func(c *fastConn) bool {
			// The window announced is zero (less than one unit of the
			// window scale may be left), and the engine holds all it may.
			return (c.rcvEdge-c.rcvNxt)>>c.rcvWS == 0 && c.held() > fastRcvCap-1<<c.rcvWS
		})
	})
	// The guest's zero-window probes reach a closed window and are
	// answered; nothing beyond the window's edge is taken, the hold
	// buffer does not overflow, the connection stays.
	bare := b.shim.bareToGuest.Load()
	eventually(t, 10*time.Second, "answers to the guest's window probes", func() bool { return b.shim.bareToGuest.Load() >= bare+2 })
	if bad := inspect(c, func(c *fastConn) string {
		if !seqLEQ(c.rcvNxt, c.rcvEdge) || c.held() > fastRcvCap || c.state != fcOpen {
			return fmt.Sprintf("rcvNxt %d edge %d held %d state %d", c.rcvNxt, c.rcvEdge, c.held(), c.state)
		}
		return ""
	}); bad != "" {
		t.Fatalf("after the guest's probes: %s", bad)
	}
	if s := sent.Load(); s >= size {
		t.Fatalf("the guest wrote all %d bytes although the window closed", s)
	}
	n, sum, err := recvSum(hc)
	if err != nil || n != size || sum != sha256.Sum256(data) {
		t.Logf("engine side: %s", inspect(c, func(c *fastConn) string {
			outq, _ := unix.IoctlGetInt(c.fd, unix.SIOCOUTQ)
			return fmt.Sprintf("state %d held %d outArmed %v hostShut %v guestFIN %v outq %d wnd %d", c.state, c.held(), c.outArmed, c.hostShut, c.guestFIN, outq, c.rcvEdge-c.rcvNxt)
		}))
		t.Fatalf("host received %d bytes (err %v), sum match %v; want %d", n, err, sum == sha256.Sum256(data), size)
	}
	b.endTransfer(t, errc, "guest write", gc, hc)
}

// endTransfer waits for the sender's result, closes both ends and checks
// that the connection ended having used the fast path alone.
func (b *fpBed) endTransfer(t *testing.T, errc <-chan error, what string, gc, hc io.Closer) {
	t.Helper()
	if err := <-errc; err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	b.closeBoth(t, gc, hc)
}

// closeBoth closes the guest's and the host's ends of a connection and
// checks that it ended, on the fast path alone.
func (b *fpBed) closeBoth(t testing.TB, gc, hc io.Closer) {
	t.Helper()
	gc.Close()
	hc.Close()
	b.waitGone(t)
	b.checkFastOnly(t)
}

// TestTCPFastGuestStall: a guest that stops reading stops taking data;
// the engine keeps the host's data and keeps trying (window probes, or
// retransmissions when gVisor's guest drops data within the window it
// announced, its buffer accounting being by memory), without resetting
// the connection, and once the guest reads again everything arrives
// intact.
func TestTCPFastGuestStall(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	gc, _, hc := b.connect(t)
	c := b.only(t)
	const size = 4 << 20
	data := pattern(size, 4)
	errc := make(chan error, 1)
	go sendAll(hc, data, hc.CloseWrite, errc)
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last engine state: %s", last)
		}
	})
	eventually(t, 10*time.Second, "the engine to stall on the guest", func() bool {
		return inspect(c, func(c *fastConn) bool {
			last = fmt.Sprintf("sndWnd %d unsent %d inflight %d state %d timer %v rto %v retries %d", c.sndWnd, c.unsent(), c.sndNxt-c.sndUna, c.state, c.timerOn, c.rto, c.retries)
			probing := c.sndWnd == 0 && c.sndUna == c.sndNxt
			retrying := c.retries > 0
			return c.unsent() > 0 && c.timerOn && (probing || retrying)
		})
	})
	// It keeps trying (200 ms, then backing off): wait for three more
	// frames to the guest; the connection stays.
	sent := b.shim.tcpToGuest.Load()
	eventually(t, 10*time.Second, "probes or retransmissions", func() bool { return b.shim.tcpToGuest.Load() >= sent+3 })
	if st := inspect(c, func(c *fastConn) fcState { return c.state }); st != fcOpen {
		t.Fatalf("connection state %d after probing, want open", st)
	}
	n, sum, err := recvSum(gc)
	if err != nil || n != size || sum != sha256.Sum256(data) {
		t.Fatalf("guest received %d bytes (err %v), sum match %v; want %d", n, err, sum == sha256.Sum256(data), size)
	}
	b.endTransfer(t, errc, "host write", gc, hc)
}

// TestTCPFastEngineClose: closing the engine with open fast-path
// connections (idle, and busy both ways) resets them on both sides and
// leaves no goroutine behind.
//
// The resets to the guest are written before the link closes, but the
// guest may still miss them: a SOCK_SEQPACKET socket closed with unread
// frames in its queue (the guest's, on the busy connection) makes the
// peer's next read fail with ECONNRESET before it reads what is queued.
// So the resets are checked where they were written (the link's frame
// count), and at the guest when they got through the shim.
func TestTCPFastEngineClose(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	type pair struct {
		gc *gonet.TCPConn
		hc *net.TCPConn
	}
	var ps []pair
	for range 3 {
		gc, _, hc := b.connect(t)
		ps = append(ps, pair{gc, hc})
	}
	// The last pair is busy: both sides write until the end.
	busy := ps[2]
	var wg sync.WaitGroup
	blob := bytes.Repeat([]byte("z"), 64<<10)
	for _, w := range []io.Writer{busy.gc, busy.hc} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1024 {
				if _, err := w.Write(blob); err != nil {
					return
				}
			}
		}()
	}
	if n := b.eng.fast.count(); n != 3 {
		t.Fatalf("%d fast-path connections, want 3", n)
	}
	txBefore := b.eep.Stats().TxFrames
	b.eng.Close()
	if n := b.eng.fast.count(); n != 0 {
		t.Errorf("%d fast-path connections after Close", n)
	}
	if tx := b.eep.Stats().TxFrames - txBefore; tx < 3 {
		// The busy connection may also have sent data meanwhile, so
		// this is a lower bound.
		t.Errorf("%d frames written during Close, want at least the 3 resets", tx)
	}
	for i, p := range ps {
		// The engine reset its host sockets; the busy host may have
		// read the reset through its writer first and see EOF.
		if err := drainErr(p.hc); isTimeout(err) || (err == nil && i != 2) {
			t.Errorf("host side %d: %v, want a reset", i, err)
		}
	}
	if got := b.shim.rstToGuest.Load(); got >= 3 {
		for i, p := range ps {
			// gVisor reports a reset once, to whichever call comes
			// first (the busy writer's), so a read may see EOF.
			if err := drainErr(p.gc); isTimeout(err) || (err == nil && i != 2) {
				t.Errorf("guest side %d: %v, want a reset", i, err)
			}
		}
	} else {
		t.Logf("%d resets reached the guest (the link closed with frames unread)", got)
	}
	// Unblock the writers (their peers are gone or reset).
	for _, p := range ps {
		p.gc.Close()
		p.hc.Close()
	}
	wg.Wait()
}

// drainErr reads r until an error: nil for EOF.
func drainErr(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// tcpFrameOpts describes a test TCP segment from the guest; zero values
// are the well-formed choice.
type tcpFrameOpts struct {
	src, dst     netip.Addr
	sport, dport uint16
	seq, ack     uint32
	flags        header.TCPFlags
	wnd          uint16
	opts         []byte // TCP options, a multiple of 4 bytes
	payload      []byte
	dataOffDelta int // added to the TCP data offset (in 4-byte words)
	ipLenDelta   int // added to the IPv4 total / IPv6 payload length
	flagsFrag    uint16
	ipOptions    bool  // IPv4: a 4-byte NOP option (IHL 6)
	v6ExtHeader  bool  // IPv6: a hop-by-hop header before TCP
	trailing     int   // bytes after the IP packet (Ethernet padding)
	ipVersion    uint8 // overrides the version nibble
	badCsum      bool
}

// buildTCPFrame builds an Ethernet frame of a guest's TCP segment.
func buildTCPFrame(o tcpFrameOpts) []byte {
	v6 := o.src.Is6()
	ipHL := header.IPv4MinimumSize
	switch {
	case v6 && o.v6ExtHeader:
		ipHL = header.IPv6MinimumSize + 8
	case v6:
		ipHL = header.IPv6MinimumSize
	case o.ipOptions:
		ipHL += 4
	}
	tcpHL := header.TCPMinimumSize + len(o.opts)
	tcpLen := tcpHL + len(o.payload)
	b := make([]byte, ethLen+ipHL+tcpLen+o.trailing)
	et := header.IPv4ProtocolNumber
	if v6 {
		et = header.IPv6ProtocolNumber
	}
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: GatewayMAC, Type: et})
	ip := b[ethLen:]
	th := header.TCP(ip[ipHL : ipHL+tcpLen])
	th.Encode(&header.TCPFields{
		SrcPort: o.sport, DstPort: o.dport, SeqNum: o.seq, AckNum: o.ack,
		DataOffset: uint8(tcpHL + 4*o.dataOffDelta), Flags: o.flags, WindowSize: o.wnd,
	})
	copy(th[header.TCPMinimumSize:], o.opts)
	copy(th[tcpHL:], o.payload)
	src, dst := tcpAddr(o.src), tcpAddr(o.dst)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen))
	sum = checksum.Checksum(th, sum)
	th.SetChecksum(^sum)
	if o.badCsum {
		th.SetChecksum(th.Checksum() + 1)
	}
	if v6 {
		next := header.TCPProtocolNumber
		if o.v6ExtHeader {
			next = 0 // hop-by-hop
			ip[header.IPv6MinimumSize] = uint8(header.TCPProtocolNumber)
			// Length 0 (8 bytes), PadN filling the rest.
			copy(ip[header.IPv6MinimumSize+2:], []byte{1, 4, 0, 0, 0, 0})
		}
		header.IPv6(ip).Encode(&header.IPv6Fields{
			PayloadLength: uint16(ipHL - header.IPv6MinimumSize + tcpLen + o.ipLenDelta), TransportProtocol: next,
			HopLimit: 64, SrcAddr: src, DstAddr: dst,
		})
	} else {
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{
			TotalLength: uint16(ipHL + tcpLen + o.ipLenDelta), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
			SrcAddr: src, DstAddr: dst, Flags: uint8(o.flagsFrag >> 13), FragmentOffset: (o.flagsFrag & 0x1fff) << 3,
		})
		if o.ipOptions {
			ip[0] = 0x46
			copy(ip[header.IPv4MinimumSize:], []byte{1, 1, 1, 0})
		}
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
	}
	if o.ipVersion != 0 {
		ip[0] = o.ipVersion<<4 | ip[0]&0xf
	}
	return b
}

func TestParseTCPFrame(t *testing.T) {
	p := []byte("payload")
	mssOpt := []byte{header.TCPOptionMSS, 4, 0x05, 0xb4}
	base4 := tcpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 1000, dport: 2000, seq: 7, ack: 9, flags: header.TCPFlagAck | header.TCPFlagPsh, wnd: 100, payload: p}
	base6 := base4
	base6.src, base6.dst = fastGuest6, fastGW6
	with := func(o tcpFrameOpts, f func(*tcpFrameOpts)) tcpFrameOpts { f(&o); return o }
	for _, tc := range []struct {
		name    string
		o       tcpFrameOpts
		ok      bool
		dataLen int
	}{
		{"v4", base4, true, len(p)},
		{"v6", base6, true, len(p)},
		{"v4 tcp options", with(base4, func(o *tcpFrameOpts) { o.opts = mssOpt }), true, len(p)},
		{"v6 tcp options", with(base6, func(o *tcpFrameOpts) { o.opts = mssOpt }), true, len(p)},
		{"v4 no payload", with(base4, func(o *tcpFrameOpts) { o.payload = nil }), true, 0},
		{"v4 padded", with(base4, func(o *tcpFrameOpts) { o.trailing = 9 }), true, len(p)},
		{"v6 padded", with(base6, func(o *tcpFrameOpts) { o.trailing = 9 }), true, len(p)},
		{"v4 ip shorter than segment", with(base4, func(o *tcpFrameOpts) { o.ipLenDelta = -3 }), true, len(p) - 3},
		{"v4 ip shorter than tcp header", with(base4, func(o *tcpFrameOpts) { o.ipLenDelta = -len(p) - 1 }), false, 0},
		{"v4 ip longer than frame", with(base4, func(o *tcpFrameOpts) { o.ipLenDelta = 1 }), false, 0},
		{"v6 payload longer than frame", with(base6, func(o *tcpFrameOpts) { o.ipLenDelta = 1 }), false, 0},
		{"v6 payload shorter than tcp header", with(base6, func(o *tcpFrameOpts) { o.ipLenDelta = -len(p) - 1 }), false, 0},
		{"data offset < 5", with(base4, func(o *tcpFrameOpts) { o.dataOffDelta = -1 }), false, 0},
		{"data offset beyond segment", with(base4, func(o *tcpFrameOpts) { o.payload = nil; o.dataOffDelta = 1 }), false, 0},
		{"data offset into payload", with(base4, func(o *tcpFrameOpts) { o.payload = make([]byte, 8); o.dataOffDelta = 1 }), true, 4},
		{"v4 ip options", with(base4, func(o *tcpFrameOpts) { o.ipOptions = true }), false, 0},
		{"v4 more fragments", with(base4, func(o *tcpFrameOpts) { o.flagsFrag = 0x2000 }), false, 0},
		{"v4 fragment offset", with(base4, func(o *tcpFrameOpts) { o.flagsFrag = 0x0001 }), false, 0},
		{"v4 dont fragment", with(base4, func(o *tcpFrameOpts) { o.flagsFrag = 0x4000 }), true, len(p)},
		{"v6 hop-by-hop", with(base6, func(o *tcpFrameOpts) { o.v6ExtHeader = true }), false, 0},
		{"v4 version 6", with(base4, func(o *tcpFrameOpts) { o.ipVersion = 6 }), false, 0},
		{"v6 version 4", with(base6, func(o *tcpFrameOpts) { o.ipVersion = 4 }), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := buildTCPFrame(tc.o)
			s, ok := parseTCPFrame(f, len(f))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			want := stack.TransportEndpointID{LocalPort: 2000, LocalAddress: tcpAddr(tc.o.dst), RemotePort: 1000, RemoteAddress: tcpAddr(tc.o.src)}
			if s.id != want {
				t.Errorf("id = %+v, want %+v", s.id, want)
			}
			if s.seq != 7 || s.ack != 9 || s.wnd != 100 || s.flags != tc.o.flags {
				t.Errorf("seq %d ack %d wnd %d flags %v", s.seq, s.ack, s.wnd, s.flags)
			}
			if s.dataLen() != tc.dataLen {
				t.Errorf("dataLen = %d, want %d", s.dataLen(), tc.dataLen)
			}
			if s.end > len(f) || s.dataOff > s.end {
				t.Fatalf("offsets %d..%d outside the frame of %d", s.dataOff, s.end, len(f))
			}
			if tc.o.dataOffDelta == 0 && !bytes.Equal(f[s.dataOff:s.end], tc.o.payload[:tc.dataLen]) {
				t.Errorf("payload %q", f[s.dataOff:s.end])
			}
			if tc.o.ipLenDelta == 0 && !tcpChecksumValid(&s, link.Frame{Segs: [][]byte{f}}) {
				t.Error("checksum of a valid segment rejected")
			}
			// Cut short, the frame or its head must be declined, never
			// read beyond.
			for n := 0; n < len(f); n++ {
				if _, ok := parseTCPFrame(f[:n], len(f)); ok && n < s.dataOff {
					t.Fatalf("accepted with only %d header bytes", n)
				}
				if _, ok := parseTCPFrame(f[:n], n); ok && n < len(f)-tc.o.trailing+min(tc.o.ipLenDelta, 0) {
					t.Fatalf("accepted a frame cut to %d bytes", n)
				}
			}
		})
	}
}

// TestTCPChecksumValid: a valid frame split into segments of any length
// (odd ones too) passes; a flipped bit anywhere in the IPv4 header, the
// TCP header or the payload (in any segment of the frame) is caught.
func TestTCPChecksumValid(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		o := tcpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 1, dport: 2, flags: header.TCPFlagAck, payload: pattern(3001, 5)}
		if v6 {
			o.src, o.dst = fastGuest6, fastGW6
		}
		f := buildTCPFrame(o)
		split := func(f []byte) link.Frame {
			return link.Frame{Segs: [][]byte{f[:100], f[100:1001], f[1001:]}}
		}
		s, ok := parseTCPFrame(f, len(f))
		if !ok || !tcpChecksumValid(&s, split(f)) {
			t.Fatalf("v6=%v: valid frame rejected (segments of 100, 901 and the rest: an odd-length segment must not shift the next one's bytes)", v6)
		}
		ipStart := ethLen
		if v6 {
			ipStart = s.tcpOff // v6 has no header checksum
		}
		for i := ipStart; i < len(f); i += 97 {
			g := bytes.Clone(f)
			g[i] ^= 0x10
			gs, ok := parseTCPFrame(g, len(g))
			if !ok {
				continue
			}
			if tcpChecksumValid(&gs, split(g)) {
				t.Errorf("v6=%v: a flipped bit at %d passed", v6, i)
			}
		}
	}
}

// TestTCPTemplateBuild: the headers of segments to the guest parse as
// gVisor parses them, with valid checksums (full ones without the
// virtio-net header; partial ones, that the guest's kernel completes,
// with it), and a GSO type only for payloads beyond the MSS.
func TestTCPTemplateBuild(t *testing.T) {
	mssOpts := []byte{header.TCPOptionMSS, 4, 0x05, 0xb4, header.TCPOptionNOP, header.TCPOptionWS, 3, 4}
	for _, v6 := range []bool{false, true} {
		for _, partial := range []bool{false, true} {
			for _, tc := range []struct {
				name    string
				s       segOut
				wantGSO bool
			}{
				{"syn-ack", segOut{flags: header.TCPFlagSyn | header.TCPFlagAck, seq: 1, ack: 2, wnd: 65535, opts: mssOpts}, false},
				{"ack", segOut{flags: header.TCPFlagAck, seq: 0xfffffff0, ack: 5, wnd: 3}, false},
				{"data", segOut{flags: header.TCPFlagAck | header.TCPFlagPsh, seq: 9, ack: 5, wnd: 3, payload: pattern(1001, 6)}, false},
				{"odd data", segOut{flags: header.TCPFlagAck, seq: 9, ack: 5, wnd: 3, payload: pattern(1, 7)}, false},
				{"gso", segOut{flags: header.TCPFlagAck, seq: 9, ack: 5, wnd: 3, payload: pattern(5000, 8), mss: 1460}, partial},
				{"rst", segOut{flags: header.TCPFlagRst | header.TCPFlagAck, ack: 5}, false},
			} {
				name := fmt.Sprintf("%s/v6=%v/partial=%v", tc.name, v6, partial)
				t.Run(name, func(t *testing.T) {
					checkTemplate(t, v6, partial, tc.s, tc.wantGSO)
				})
			}
		}
	}
}

func checkTemplate(t *testing.T, v6, partial bool, s segOut, wantGSO bool) {
	id := stack.TransportEndpointID{LocalPort: 80, LocalAddress: tcpAddr(fastGW4), RemotePort: 4000, RemoteAddress: tcpAddr(fastGuest4)}
	if v6 {
		id.LocalAddress, id.RemoteAddress = tcpAddr(fastGW6), tcpAddr(fastGuest6)
	}
	tpl := tcpTemplate{id: id, v6: v6, src: GatewayMAC, dst: guestMAC, partial: partial}
	head, vh := tpl.build(&s)
	if gso := vh.GSOType != link.VnetGSONone; gso != wantGSO {
		t.Fatalf("GSO type %d, want GSO %v", vh.GSOType, wantGSO)
	}
	frame := append(bytes.Clone(head), s.payload...)
	eth := header.Ethernet(frame)
	if eth.SourceAddress() != GatewayMAC || eth.DestinationAddress() != guestMAC {
		t.Errorf("MACs %v -> %v", eth.SourceAddress(), eth.DestinationAddress())
	}
	var th header.TCP
	var src, dst tcpip.Address
	if v6 {
		ip := header.IPv6(frame[ethLen:])
		if !ip.IsValid(len(frame)-ethLen) || ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			t.Fatal("invalid IPv6 header")
		}
		th, src, dst = header.TCP(ip.Payload()), ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv4(frame[ethLen:])
		if !ip.IsValid(len(frame)-ethLen) || !ip.IsChecksumValid() || ip.Protocol() != uint8(header.TCPProtocolNumber) {
			t.Fatal("invalid IPv4 header or checksum")
		}
		if ip.Flags()&header.IPv4FlagDontFragment == 0 {
			t.Error("DF not set")
		}
		th, src, dst = header.TCP(ip.Payload()), ip.SourceAddress(), ip.DestinationAddress()
	}
	if src != id.LocalAddress || dst != id.RemoteAddress || th.SourcePort() != 80 || th.DestinationPort() != 4000 {
		t.Errorf("addressed %v:%d -> %v:%d", src, th.SourcePort(), dst, th.DestinationPort())
	}
	if th.SequenceNumber() != s.seq || th.AckNumber() != s.ack || th.Flags() != s.flags || th.WindowSize() != s.wnd {
		t.Errorf("seq %d ack %d flags %v wnd %d", th.SequenceNumber(), th.AckNumber(), th.Flags(), th.WindowSize())
	}
	if !bytes.Equal(th.Options(), s.opts) || !bytes.Equal(th.Payload(), s.payload) {
		t.Errorf("options %x payload of %d bytes", th.Options(), len(th.Payload()))
	}
	if len(s.opts) > 0 {
		so := header.ParseSynOptions(th.Options(), true)
		if so.MSS != 1460 || so.WS != 4 {
			t.Errorf("SYN options parsed as MSS %d WS %d", so.MSS, so.WS)
		}
	}
	tcpLen := uint16(len(th))
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, tcpLen)
	if partial {
		if vh.Flags&link.VnetFlagNeedsCsum == 0 || int(vh.CsumStart) != len(frame)-len(th) || vh.CsumOffset != tcpCsumOffset || int(vh.HdrLen) != len(head) {
			t.Fatalf("virtio-net header %+v", vh)
		}
		// The field holds the pseudo-header sum; the kernel adds the
		// segment's own sum and complements.
		if th.Checksum() != xsum {
			t.Errorf("partial checksum %#x, want the pseudo-header's %#x", th.Checksum(), xsum)
		}
		full := bytes.Clone(th)
		header.TCP(full).SetChecksum(0)
		header.TCP(full).SetChecksum(^checksum.Checksum(full, xsum))
		th = full
	} else if vh != (link.VnetHdr{}) {
		t.Errorf("virtio-net header %+v without partial checksums", vh)
	}
	payloadSum := checksum.Checksum(th.Payload(), 0)
	if !th.IsChecksumValid(src, dst, payloadSum, uint16(len(th.Payload()))) {
		t.Error("TCP checksum invalid")
	}
	if wantGSO && int(vh.GSOSize) != s.mss {
		t.Errorf("GSO size %d, want %d", vh.GSOSize, s.mss)
	}
}

// TestTCPFastSACKBlocks: the SACK blocks of an ACK describe the out-of-order
// data kept, adjacent and overlapping pieces merged, at most four, and
// parse as SACK blocks; without the guest's SACK offer there are none.
func TestTCPFastSACKBlocks(t *testing.T) {
	seg := func(seq uint32, n int) oooSeg { return oooSeg{seq: seq, data: make([]byte, n)} }
	type block struct{ l, r uint32 }
	cases := []struct {
		name string
		ooo  []oooSeg
		want []block
	}{
		{"none", nil, nil},
		{"one", []oooSeg{seg(100, 10)}, []block{{100, 110}}},
		{"adjacent merged", []oooSeg{seg(100, 10), seg(110, 5)}, []block{{100, 115}}},
		{"overlap merged", []oooSeg{seg(100, 10), seg(105, 20)}, []block{{100, 125}}},
		{"two", []oooSeg{seg(100, 10), seg(200, 10)}, []block{{100, 110}, {200, 210}}},
		{"wraps", []oooSeg{seg(0xfffffff0, 0x20)}, []block{{0xfffffff0, 0x10}}},
		{"at most four", []oooSeg{seg(10, 1), seg(20, 1), seg(30, 1), seg(40, 1), seg(50, 1)},
			[]block{{10, 11}, {20, 21}, {30, 31}, {40, 41}}},
	}
	for _, tc := range cases {
		for _, sackOK := range []bool{true, false} {
			c := &fastConn{ooo: tc.ooo, sackOK: sackOK}
			opts := c.sackOpts(&c.optBuf)
			want := tc.want
			if !sackOK {
				want = nil
			}
			if len(want) == 0 {
				if opts != nil {
					t.Errorf("%s (sack %v): options %x, want none", tc.name, sackOK, opts)
				}
				continue
			}
			if len(opts)%4 != 0 {
				t.Fatalf("%s: %d option bytes, not a multiple of 4", tc.name, len(opts))
			}
			got := header.ParseTCPOptions(opts).SACKBlocks
			if len(got) != len(want) {
				t.Fatalf("%s: %d blocks %v, want %v", tc.name, len(got), got, want)
			}
			for i, b := range got {
				if uint32(b.Start) != want[i].l || uint32(b.End) != want[i].r {
					t.Errorf("%s: block %d = [%d, %d), want [%d, %d)", tc.name, i, b.Start, b.End, want[i].l, want[i].r)
				}
			}
		}
	}
}
