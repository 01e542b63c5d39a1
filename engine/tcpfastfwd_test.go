package engine

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// Forwarded connections on the fast path (tcpfastfwd.go), on the fast
// path's test bed: a host client connects to a port forward, the engine
// opens the connection towards the guest stack itself.

// learnGuest has the guest open (and close) a connection through the
// gateway, which makes it resolve the gateway: the engine's neighbour
// table then knows the guest, as on a guest that has sent anything.
func (b *fpBed) learnGuest(t *testing.T) {
	t.Helper()
	gc, _, hc := b.connect(t)
	gc.Close()
	hc.Close()
	b.waitGone(t)
	if _, ok := b.eng.fast.neighbor(b.eng.Plan().Guest); !ok {
		t.Fatal("the engine does not know the guest's link address")
	}
}

// forward adds TCP forward id to the guest's port (on its default
// address) and returns the host address to connect to.
func (b *fpBed) forward(t *testing.T, id int, port uint16) netip.AddrPort {
	t.Helper()
	return b.forwardTo(t, proto.Forward{ID: id, GuestPort: int(port)})
}

// forwardTo adds TCP forward fwd and returns the host address to connect
// to.
func (b *fpBed) forwardTo(t *testing.T, fwd proto.Forward) netip.AddrPort {
	t.Helper()
	f, hostAddr := hostTCPListener(t)
	fwd.Proto = "tcp"
	if err := b.eng.AddForward(fwd, f); err != nil {
		t.Fatalf("AddForward: %v", err)
	}
	return hostAddr
}

// learnGuest6 has the guest send a datagram to the gateway's IPv6 address
// (to the host's discard port on ::1), which makes it resolve the gateway.
func (b *fpBed) learnGuest6(t *testing.T) {
	t.Helper()
	gw6 := b.eng.Plan().Gateway6
	uc, err := gonet.DialUDP(b.guest, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpAddr(gw6), Port: 9}, header.IPv6ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the engine to know the guest's IPv6 link address", func() bool {
		_, ok := b.eng.fast.neighbor(b.eng.Plan().Guest6)
		return ok
	})
}

// guestListen listens on the guest's IPv4 address, port port.
func (b *fpBed) guestListen(t *testing.T, port uint16) *gonet.TCPListener {
	t.Helper()
	return b.guestListenOn(t, netip.AddrPortFrom(b.eng.Plan().Guest, port))
}

// guestListenOn listens on the guest's address a.
func (b *fpBed) guestListenOn(t *testing.T, a netip.AddrPort) *gonet.TCPListener {
	t.Helper()
	ln, err := gonet.ListenTCP(b.guest, tcpip.FullAddress{NIC: 1, Addr: tcpAddr(a.Addr()), Port: a.Port()}, protoOf(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// newFwdBed is a bed whose engine knows the guest, with forward id to the
// guest's port, where the guest listens: the bed, the guest's listener and
// the host address to connect to.
func newFwdBed(t *testing.T, id int, port uint16) (*fpBed, *gonet.TCPListener, netip.AddrPort) {
	t.Helper()
	noLeaks(t)
	b := newFPBed(t)
	b.learnGuest(t)
	return b, b.guestListen(t, port), b.forward(t, id, port)
}

// acceptOne starts accepting one connection on the guest's listener ln;
// awaitAccept waits for it.
func acceptOne(ln *gonet.TCPListener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c // nil after an error
	}()
	return ch
}

// awaitAccept returns the guest's end of a connection acceptOne accepted,
// with a deadline that bounds the test, and closes it when the test ends.
func awaitAccept(t *testing.T, ch <-chan net.Conn) *gonet.TCPConn {
	t.Helper()
	select {
	case c := <-ch:
		if c == nil {
			t.Fatal("guest accept failed")
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c.(*gonet.TCPConn)
	case <-time.After(10 * time.Second):
		t.Fatal("the guest accepted nothing")
		return nil
	}
}

// forwarded connects a host client to hostAddr and accepts the
// connection on the guest's listener ln; both ends have deadlines and are
// closed when the test ends.
func forwarded(t *testing.T, hostAddr netip.AddrPort, ln *gonet.TCPListener) (guest *gonet.TCPConn, host *net.TCPConn) {
	t.Helper()
	ch := acceptOne(ln)
	hc, err := net.DialTimeout("tcp", hostAddr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	hc.SetDeadline(time.Now().Add(20 * time.Second))
	return awaitAccept(t, ch), hc.(*net.TCPConn)
}

// TestTCPFastForward: a forwarded connection, opened by the engine towards
// the guest, carries data both ways (with frames lost either way) on the
// fast path alone, and ends with both sides' FINs.
func TestTCPFastForward(t *testing.T) {
	for _, tc := range fpDrops {
		t.Run(tc.name, func(t *testing.T) {
			b, ln, hostAddr := newFwdBed(t, 1, 8080)
			b.shim.dropToGuest.Store(tc.toGuest)
			b.shim.dropToEngine.Store(tc.toEngine)
			gc, hc := forwarded(t, hostAddr, ln)
			if c := b.only(t); inspect(c, func(c *fastConn) bool { return c.owner == nil }) {
				t.Fatal("the fast-path connection is not the forward's")
			}
			exchange(t, gc, hc, 4<<20)
			if (tc.toGuest > 0 || tc.toEngine > 0) && b.shim.dropped.Load() == 0 {
				t.Error("the shim dropped nothing")
			}
			b.closeBoth(t, gc, hc)
		})
	}
}

// TestTCPFastForwardIPv6: a forward to the guest's IPv6 address takes the
// fast path too; the guest sees the connection come from the gateway.
func TestTCPFastForwardIPv6(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	b.learnGuest6(t)
	plan := b.eng.Plan()
	ln := b.guestListenOn(t, netip.AddrPortFrom(plan.Guest6, 8084))
	hostAddr := b.forwardTo(t, proto.Forward{ID: 1, GuestAddr: plan.Guest6.String(), GuestPort: 8084})
	gc, hc := forwarded(t, hostAddr, ln)
	if c := b.only(t); !inspect(c, func(c *fastConn) bool { return c.tpl.v6 }) {
		t.Fatal("the fast-path connection is not IPv6")
	}
	if got := gc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != plan.Gateway6 {
		t.Errorf("the guest sees the connection from %s, want %s", got, plan.Gateway6)
	}
	exchange(t, gc, hc, 1<<20)
	b.closeBoth(t, gc, hc)
}

// TestTCPFastForwardResolves: a forwarded connection made before the
// engine knows the guest's link address has it resolved first, and takes
// the fast path too.
func TestTCPFastForwardResolves(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	if _, ok := b.eng.fast.neighbor(b.eng.Plan().Guest); ok {
		t.Fatal("the engine knows the guest before it sent anything")
	}
	ln := b.guestListen(t, 8081)
	hostAddr := b.forward(t, 1, 8081)
	gc, hc := forwarded(t, hostAddr, ln)
	b.only(t)
	exchange(t, gc, hc, 1<<20)
	b.closeBoth(t, gc, hc)
}

// TestTCPFastForwardSYNLost: our SYN to the guest is sent again after a
// timeout.
func TestTCPFastForwardSYNLost(t *testing.T) {
	b, ln, hostAddr := newFwdBed(t, 1, 8082)
	b.shim.synsToGuest.Store(1)
	gc, hc := forwarded(t, hostAddr, ln)
	if d := b.shim.dropped.Load(); d != 1 {
		t.Fatalf("the shim dropped %d SYNs, want 1", d)
	}
	exchange(t, gc, hc, 64<<10)
	b.checkFastOnly(t)
}

// TestTCPFastForwardRefused: when the guest refuses (nothing listens), the
// host client's connection is closed at once.
func TestTCPFastForwardRefused(t *testing.T) {
	noLeaks(t)
	b := newFPBed(t)
	b.learnGuest(t)
	hostAddr := b.forward(t, 1, 9999)
	hc, err := net.DialTimeout("tcp", hostAddr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := hc.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("host read = %v, want the connection closed", err)
	}
	b.waitGone(t)
	b.checkFastOnly(t)
}

// TestTCPFastForwardRemove: removing the forward resets its fast-path
// connections on both sides before RemoveForward returns.
func TestTCPFastForwardRemove(t *testing.T) {
	b, ln, hostAddr := newFwdBed(t, 5, 8083)
	gc, hc := forwarded(t, hostAddr, ln)
	b.only(t)
	if err := b.eng.RemoveForward(5); err != nil {
		t.Fatal(err)
	}
	if n := b.eng.fast.count(); n != 0 {
		t.Fatalf("%d fast-path connections after RemoveForward, want 0", n)
	}
	if _, err := io.ReadAll(hc); err == nil {
		t.Error("the host side ended cleanly, want a reset")
	}
	if _, err := io.ReadAll(gc); err == nil || isTimeout(err) || errors.Is(err, io.EOF) {
		t.Errorf("the guest side read %v, want a reset", err)
	}
	b.checkFastOnly(t)
}

// TestTCPFastForwardRealClient: the guest sees a forwarded connection
// from the host client's own address when that is routable (as through
// gVisor: policy.ForwardSource), and its answers to that address reach
// the fast path.
func TestTCPFastForwardRealClient(t *testing.T) {
	b, ln, _ := newFwdBed(t, 7, 8085)
	fw := b.eng.forwards[7]
	host, ours := tcpPair(t)
	client := netip.MustParseAddrPort("192.0.2.7:4321") // TEST-NET-1: frames stay in the bed
	ch := acceptOne(ln)
	fw.goFunc(func() { fw.connectTCP(addrConn{TCPConn: host, remote: net.TCPAddrFromAddrPort(client)}) })
	gc := awaitAccept(t, ch)
	ours.SetDeadline(time.Now().Add(20 * time.Second))
	if got := gc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != client.Addr() {
		t.Errorf("the guest sees %s, want the client's %s", got, client.Addr())
	}
	b.only(t)
	exchange(t, gc, ours, 256<<10)
	b.closeBoth(t, gc, ours)
}
