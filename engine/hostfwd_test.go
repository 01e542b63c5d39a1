package engine

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// hostTCPListener makes a loopback listener and returns its file (what the
// supervisor would send) and address; the listener itself is closed.
func hostTCPListener(t *testing.T) (*os.File, netip.AddrPort) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, ln.Addr().(*net.TCPAddr).AddrPort()
}

// guestEcho listens on the guest stack and echoes each connection; it
// reports each connection's remote address.
func guestEcho(t *testing.T, tb *testBed, port uint16) <-chan net.Addr {
	t.Helper()
	return guestEchoOn(t, tb, netip.AddrPortFrom(tb.eng.Plan().Guest, port))
}

func guestEchoOn(t *testing.T, tb *testBed, addr netip.AddrPort) <-chan net.Addr {
	t.Helper()
	ln, err := gonet.ListenTCP(tb.guest, tcpip.FullAddress{NIC: 1, Addr: tcpAddr(addr.Addr()), Port: addr.Port()}, protoOf(addr.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan net.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr()
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return peers
}

// forwardTCP adds TCP forward fwd from a fresh host listener and connects
// to it from the host; the connection is closed when the test ends.
func forwardTCP(t *testing.T, tb *testBed, fwd proto.Forward) net.Conn {
	t.Helper()
	f, hostAddr := hostTCPListener(t)
	fwd.Proto = "tcp"
	if err := tb.eng.AddForward(fwd, f); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", hostAddr.String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestForwardTCP(t *testing.T) {
	noLeaks(t)
	tb := newTestBed(t, testConfig())
	peers := guestEcho(t, tb, 8080)
	f, hostAddr := hostTCPListener(t)
	if err := tb.eng.AddForward(proto.Forward{ID: 1, Proto: "tcp", GuestAddr: "10.0.2.100", GuestPort: 8080}, f); err != nil {
		t.Fatalf("AddForward: %v", err)
	}
	f.Close()
	if err := tb.eng.AddForward(proto.Forward{ID: 1, Proto: "tcp", GuestPort: 8080}, f); err == nil {
		t.Fatal("AddForward with a duplicate id succeeded")
	}
	c, err := net.DialTimeout("tcp", hostAddr.String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("forward"), 10000)
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through forward: %d bytes, %v", len(got), err)
	}
	select {
	case a := <-peers:
		// A loopback client appears as the gateway.
		if ip := a.(*net.TCPAddr).AddrPort().Addr(); ip != tb.eng.Plan().Gateway {
			t.Fatalf("guest saw client %s, want %s", ip, tb.eng.Plan().Gateway)
		}
	case <-time.After(time.Second):
		t.Fatal("guest saw no connection")
	}
	if err := tb.eng.RemoveForward(1); err != nil {
		t.Fatalf("RemoveForward: %v", err)
	}
	if err := tb.eng.RemoveForward(1); err == nil {
		t.Fatal("second RemoveForward succeeded")
	}
	if c, err := net.DialTimeout("tcp", hostAddr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting after RemoveForward")
	}
}

// addrConn is a TCP connection with a chosen remote address.
type addrConn struct {
	*net.TCPConn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.AcceptTCP()
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return b, a
}

func TestForwardTCPRealClientAddress(t *testing.T) {
	noLeaks(t)
	tb := newTestBed(t, testConfig())
	peers := guestEcho(t, tb, 8081)
	f, _ := hostTCPListener(t)
	if err := tb.eng.AddForward(proto.Forward{ID: 7, Proto: "tcp", GuestPort: 8081}, f); err != nil {
		t.Fatal(err)
	}
	fw := tb.eng.forwards[7]
	host, ours := tcpPair(t)
	client := netip.MustParseAddrPort("192.0.2.7:4321")
	fw.goFunc(func() { fw.connectTCP(addrConn{TCPConn: host, remote: net.TCPAddrFromAddrPort(client)}) })
	defer ours.Close()
	ours.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ours.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(ours, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	a := <-peers
	if got := a.(*net.TCPAddr).AddrPort().Addr(); got != client.Addr() {
		t.Fatalf("guest saw client %s, want %s", got, client.Addr())
	}
}

func TestForwardTCPToIPv6Guest(t *testing.T) {
	noLeaks(t)
	tb := newTestBed(t, testConfig())
	peers := guestEchoOn(t, tb, netip.AddrPortFrom(tb.eng.Plan().Guest6, 8082))
	c := forwardTCP(t, tb, proto.Forward{ID: 4, GuestAddr: "fd00::100", GuestPort: 8082})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("six"))
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "six" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if got := (<-peers).(*net.TCPAddr).AddrPort().Addr(); got != tb.eng.Plan().Gateway6 {
		t.Fatalf("guest saw %s, want %s", got, tb.eng.Plan().Gateway6)
	}
}

// TestRemoveForwardEndsConnections: removing a forward resets the
// connections relayed through it before RemoveForward returns.
func TestRemoveForwardEndsConnections(t *testing.T) {
	noLeaks(t)
	tb := newTestBed(t, testConfig())
	guestEcho(t, tb, 8083)
	c := forwardTCP(t, tb, proto.Forward{ID: 5, GuestPort: 8083})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if err := tb.eng.RemoveForward(5); err != nil {
		t.Fatal(err)
	}
	if n := tb.eng.tcp.sched.Load().count(); n != 0 {
		t.Fatalf("%d connections still relayed after RemoveForward", n)
	}
	if _, err := io.ReadAll(c); err == nil {
		t.Fatal("host side ended cleanly after RemoveForward, want a reset")
	}
}

func TestForwardTCPGuestNotListening(t *testing.T) {
	noLeaks(t)
	tb := newTestBed(t, testConfig())
	c := forwardTCP(t, tb, proto.Forward{ID: 2, GuestPort: 9999})
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read = %v, want the connection closed at once", err)
	}
}

func TestForwardUDP(t *testing.T) {
	noLeaks(t)
	tb := newTestBed(t, testConfig(), WithUDPIdleTimeout(time.Minute, time.Minute))
	// Guest UDP echo server that reports who sent.
	gc, err := gonet.DialUDP(tb.guest, &tcpip.FullAddress{NIC: 1, Addr: tcpAddr(tb.eng.Plan().Guest), Port: 5353}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	senders := make(chan netip.AddrPort, 16)
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := gc.ReadFrom(buf)
			if err != nil {
				return
			}
			senders <- from.(*net.UDPAddr).AddrPort()
			gc.WriteTo(buf[:n], from)
		}
	}()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := pc.File()
	pc.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tb.eng.AddForward(proto.Forward{ID: 3, Proto: "udp", GuestAddr: "10.0.2.100", GuestPort: 5353}, f); err != nil {
		t.Fatal(err)
	}
	hostAddr := pc.LocalAddr().(*net.UDPAddr)
	seen := map[netip.AddrPort]bool{}
	for i := range 2 {
		c, err := net.DialUDP("udp", nil, hostAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := []byte{byte(i), 'x'}
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("client %d: %q %v", i, buf[:n], err)
		}
		from := <-senders
		if from.Addr() != tb.eng.Plan().Gateway {
			t.Fatalf("guest saw %s, want the gateway", from)
		}
		seen[from] = true
	}
	if len(seen) != 2 {
		t.Fatalf("two clients shared a flow: %v", seen)
	}
	if err := tb.eng.RemoveForward(3); err != nil {
		t.Fatal(err)
	}
}

func TestAddForwardValidation(t *testing.T) {
	tb := newTestBed(t, policy4Only())
	f, _ := hostTCPListener(t)
	for _, fwd := range []proto.Forward{
		{ID: 1, Proto: "sctp", GuestPort: 80},
		{ID: 1, Proto: "tcp", GuestPort: 0},
		{ID: 1, Proto: "tcp", GuestPort: 70000},
		{ID: 1, Proto: "tcp", GuestAddr: "bogus", GuestPort: 80},
		{ID: 1, Proto: "tcp", GuestAddr: "fd00::100", GuestPort: 80}, // no -6
	} {
		if err := tb.eng.AddForward(fwd, f); err == nil {
			t.Errorf("AddForward(%+v) succeeded", fwd)
		}
	}
}
