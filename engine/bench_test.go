package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// benchChunk is what one benchmark iteration moves.
const benchChunk = 256 << 10

// BenchmarkTCPThroughEngine moves data between a guest gVisor stack and a
// loopback server on the host through the engine (NAT via the gateway
// address), over an in-memory link: no kernel network device, so it measures
// the engine's own cost (two gVisor stacks and the copy). Run with e.g.
// go test -run ^$ -bench TCPThroughEngine -benchtime 2s ./engine/
func BenchmarkTCPThroughEngine(b *testing.B) {
	for _, mtu := range []int{1500, 65520} {
		for _, cc := range []string{"reno", "cubic"} {
			for _, dir := range []string{"guest2host", "host2guest"} {
				b.Run(fmt.Sprintf("mtu=%d/cc=%s/%s", mtu, cc, dir), func(b *testing.B) {
					benchTCP(b, mtu, cc, dir == "guest2host")
				})
			}
		}
	}
}

func benchTCP(b *testing.B, mtu int, cc string, up bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if up {
			io.Copy(io.Discard, c)
		} else {
			buf := make([]byte, benchChunk)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}
	}()
	cfg := testConfig()
	cfg.MTU = mtu
	tb := newTestBed(b, cfg, func(o *options) { o.congestion = cc })
	if err := tuneTCP(tb.guest, cc); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tb.dialTCP(ctx, netip.AddrPortFrom(tb.eng.Plan().Gateway, ln.Addr().(*net.TCPAddr).AddrPort().Port()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if up {
			_, err = c.Write(buf)
		} else {
			_, err = io.ReadFull(c, buf)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTCPConnectEchoClose is netbench's connection-rate test through
// the engine over an in-memory link: the guest connects to a loopback echo
// server on the host (via the gateway address), sends one byte, reads it
// back and closes, sequentially. It measures the connect path (SYN dedupe,
// host dial, handshake, relay goroutines, teardown).
func BenchmarkTCPConnectEchoClose(b *testing.B) {
	srv := echoServer(b)
	tb := newTestBed(b, policy4Only())
	dst := netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port())
	buf := make([]byte, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := tb.dialTCP(ctx, dst)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		echoByte(b, c, buf)
		c.Close()
	}
}

// BenchmarkTCPRoundTrip is netbench's 1-byte request/response test through
// the engine over an in-memory link, on one connection.
func BenchmarkTCPRoundTrip(b *testing.B) {
	srv := echoServer(b)
	tb := newTestBed(b, policy4Only())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := tb.dialTCP(ctx, netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		echoByte(b, c, buf)
	}
}

// echoByte writes buf (one byte) on c and reads its echo back into buf;
// any error fails b. No b.Helper: it runs once per iteration, and its cost
// would be measured.
func echoByte(b *testing.B, c net.Conn, buf []byte) {
	if _, err := c.Write(buf); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatal(err)
	}
}
