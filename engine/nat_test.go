package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// noLeaks checks, after every later cleanup (the test bed's), that no
// goroutine is left.
func noLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// echoServer serves TCP echo on 127.0.0.1; each connection echoes until
// EOF, then closes.
func echoServer(t testing.TB) netip.AddrPort {
	t.Helper()
	return echoServerOn(t, "127.0.0.1:0")
}

// echoServerOn is echoServer on another loopback address.
func echoServerOn(t testing.TB, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// closedPort returns a loopback TCP port nobody listens on.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	ln.Close()
	return port
}

func TestTCPToHostLoopbackViaGateway(t *testing.T) {
	noLeaks(t)
	srv4 := echoServer(t)
	srv6 := echoServerOn(t, "[::1]:0")
	tb := newTestBed(t, testConfig())
	for _, target := range []netip.AddrPort{
		netip.AddrPortFrom(tb.eng.Plan().Gateway, srv4.Port()),
		netip.AddrPortFrom(tb.eng.Plan().Gateway6, srv6.Port()),
	} {
		t.Run(target.Addr().String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := tb.dialTCP(ctx, target)
			if err != nil {
				t.Fatalf("dial %s: %v", target, err)
			}
			defer c.Close()
			data := make([]byte, 1<<20)
			rand.NewChaCha8([32]byte{1}).Read(data)
			go func() {
				c.Write(data)
				c.CloseWrite() // half-close: the server sees EOF and closes
			}()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("echo mismatch: got %d bytes, want %d", len(got), len(data))
			}
		})
	}
}

func TestTCPRefused(t *testing.T) {
	noLeaks(t)
	port := closedPort(t)
	cfgNoLoop := testConfig()
	cfgNoLoop.DisableHostLoopback = true
	srv := echoServer(t)
	tests := []struct {
		name string
		cfg  func() *testBed
		dst  func(*testBed) netip.AddrPort
	}{
		{"closed port", nil, func(tb *testBed) netip.AddrPort { return netip.AddrPortFrom(tb.eng.Plan().Gateway, port) }},
		{"host loopback disabled", func() *testBed { return newTestBed(t, cfgNoLoop) },
			func(tb *testBed) netip.AddrPort { return netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port()) }},
		{"guest network", nil, func(*testBed) netip.AddrPort { return netip.MustParseAddrPort("10.0.2.50:80") }},
		{"dns address", nil, func(tb *testBed) netip.AddrPort { return netip.AddrPortFrom(tb.eng.Plan().DNS, srv.Port()) }},
	}
	def := newTestBed(t, testConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := def
			if tt.cfg != nil {
				tb = tt.cfg()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			c, err := tb.dialTCP(ctx, tt.dst(tb))
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want refusal")
			}
			if !strings.Contains(err.Error(), "refused") {
				t.Fatalf("dial error = %v, want connection refused", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("refusal took %v, want < 1s", d)
			}
		})
	}
	if n := def.eng.Stats().TCPRefused.Load(); n < 3 {
		t.Errorf("TCPRefused = %d, want >= 3", n)
	}
}

func TestSYNLimits(t *testing.T) {
	e := &Engine{opts: options{synLimit: 3, synLimitPerSrc: 2}}
	tn := &tcpNAT{e: e, inFlight: map[stack.TransportEndpointID]struct{}{}, perSrc: map[tcpip.Address]int{}}
	id := func(src string, port uint16) stack.TransportEndpointID {
		return stack.TransportEndpointID{RemoteAddress: tcpAddr(netip.MustParseAddr(src)), RemotePort: port, LocalAddress: tcpAddr(netip.MustParseAddr("1.1.1.1")), LocalPort: 80}
	}
	steps := []struct {
		id   stack.TransportEndpointID
		want acquireResult
	}{
		{id("10.0.2.100", 1), acquireOK},
		{id("10.0.2.100", 1), acquireDuplicate}, // SYN retransmit
		{id("10.0.2.100", 2), acquireOK},
		{id("10.0.2.100", 3), acquireOverLimit}, // per source
		{id("10.0.2.101", 1), acquireOK},
		{id("10.0.2.102", 1), acquireOverLimit}, // total
	}
	for i, s := range steps {
		if got := tn.acquire(s.id); got != s.want {
			t.Fatalf("step %d: acquire = %v, want %v", i, got, s.want)
		}
	}
	tn.release(id("10.0.2.100", 1))
	if got := tn.acquire(id("10.0.2.100", 3)); got != acquireOK {
		t.Fatalf("after release: acquire = %v, want OK", got)
	}
	for _, i := range []stack.TransportEndpointID{id("10.0.2.100", 2), id("10.0.2.100", 3), id("10.0.2.101", 1)} {
		tn.release(i)
	}
	if len(tn.inFlight) != 0 || len(tn.perSrc) != 0 {
		t.Fatalf("tables not empty after releases: %v %v", tn.inFlight, tn.perSrc)
	}
	e.wg.Wait() // every acquire was released
}

// udpEchoServer echoes datagrams on 127.0.0.1.
func udpEchoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	srv, _ := udpEchoCounter(t, "127.0.0.1:0")
	return srv
}

// udpEchoCounter echoes datagrams on addr (an IPv4 or IPv6 loopback) and
// counts them; the server is stopped, and its goroutine gone, when the
// test ends.
func udpEchoCounter(t *testing.T, addr string) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			n.Add(1)
			pc.WriteTo(buf[:m], from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), &n
}

func TestUDPEchoAndExpiry(t *testing.T) {
	noLeaks(t)
	srv := udpEchoServer(t)
	tb := newTestBed(t, testConfig(), WithUDPIdleTimeout(300*time.Millisecond, 300*time.Millisecond))
	c, err := tb.dialUDP(netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2000)
	for i := range 3 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("echo %d mismatch", i)
		}
	}
	if n := tb.eng.udp.count(); n != 1 {
		t.Fatalf("flows = %d, want 1", n)
	}
	eventually(t, 3*time.Second, "UDP flow expiry", func() bool { return tb.eng.udp.count() == 0 })
	// A new datagram after expiry starts a new flow.
	c.Write([]byte("again"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("after expiry: %q, %v", buf[:n], err)
	}
}

func TestUDPRefusedGetsPortUnreachable(t *testing.T) {
	noLeaks(t)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	pc.Close()
	tb := newTestBed(t, testConfig())
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(tb.eng.Plan().Gateway, port), // host says ECONNREFUSED
		netip.MustParseAddrPort("10.0.2.50:9"),          // refused by policy
		netip.AddrPortFrom(tb.eng.Plan().DNS, 53),       // no DNS service here
	} {
		c, err := tb.dialUDP(dst)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		// gonet does not wake a blocked Read for an ICMP error (a Linux
		// guest does), so poll with short reads.
		for range 30 {
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err = c.Read(make([]byte, 10)); !isTimeout(err) {
				break
			}
		}
		c.Close()
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("%s: read error = %v, want connection refused", dst, err)
		}
	}
}

func TestUDPFlowTableBound(t *testing.T) {
	noLeaks(t)
	srv := udpEchoServer(t)
	tb := newTestBed(t, testConfig(), WithMaxUDPFlows(2))
	dst := netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port())
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 3 {
		c, err := tb.dialUDP(dst)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err = c.Read(make([]byte, 10))
		if i < 2 && err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		if i == 2 && err == nil {
			t.Fatal("third flow got through a table of 2")
		}
	}
	if n := tb.eng.Stats().UDPFlowsDropped.Load(); n == 0 {
		t.Fatal("UDPFlowsDropped = 0")
	}
}

func TestCloseEndsFlows(t *testing.T) {
	noLeaks(t)
	srv := echoServer(t)
	usrv := udpEchoServer(t)
	tb := newTestBed(t, testConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := tb.dialTCP(ctx, netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u, err := tb.dialUDP(netip.AddrPortFrom(tb.eng.Plan().Gateway, usrv.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("x"))
	eventually(t, 3*time.Second, "UDP flow", func() bool { return tb.eng.udp.count() == 1 })
	done := make(chan struct{})
	go func() {
		tb.eng.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with open flows")
	}
}

func TestPayloadChecksumLarge(t *testing.T) {
	// 16 MiB each way through one connection, compared by hash.
	noLeaks(t)
	srv := echoServer(t)
	tb := newTestBed(t, testConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tb.dialTCP(ctx, netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 16 << 20
	src := io.LimitReader(rand.NewChaCha8([32]byte{7}), size)
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.TeeReader(src, want))
		c.CloseWrite()
		errc <- err
	}()
	got := sha256.New()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(got, c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("write: %v", err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("got %d bytes, hash mismatch=%v", n, !bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
}

func TestOutboundAddr(t *testing.T) {
	cfg := testConfig()
	cfg.OutboundAddr = "lo" // an interface name: its first IPv4 address
	cfg.OutboundAddr6 = "::1"
	tb := newTestBed(t, cfg)
	if got := tb.eng.outbound4; got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("outbound4 = %s", got)
	}
	if got := tb.eng.outboundFor(netip.MustParseAddr("192.0.2.1")); got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("outboundFor(remote) = %s", got)
	}
	if got := tb.eng.outboundFor(netip.MustParseAddr("127.0.0.1")); got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("outboundFor(loopback) = %s, want the outbound address as for any target", got)
	}
	if got := tb.eng.outboundFor(netip.MustParseAddr("2001:db8::1")); got != netip.MustParseAddr("::1") {
		t.Fatalf("outboundFor(remote6) = %s", got)
	}
	for _, bad := range []string{"no-such-interface0", "2001:db8::1"} {
		cfg := testConfig()
		cfg.OutboundAddr = bad
		w := newWire(1500, GatewayMAC, guestMAC)
		if e, err := New(cfg, w.a); err == nil {
			e.Close()
			t.Errorf("New with --outbound-addr=%s succeeded", bad)
		}
		w.close()
	}
}
