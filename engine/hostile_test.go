package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Hostile guests (issue 9): SYN floods, zero windows and overlapping
// fragments. Each case checks that the engine's resources stay bounded and
// that other flows keep working.

// countingListener accepts TCP connections on 127.0.0.1, keeps them open
// until the test ends, and counts how many are open at once at most.
type countingListener struct {
	ln        net.Listener
	open, max atomic.Int64
}

func newCountingListener(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := cl.open.Add(1)
			for m := cl.max.Load(); n > m && !cl.max.CompareAndSwap(m, n); m = cl.max.Load() {
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, c) // until the engine closes its side
				c.Close()
				cl.open.Add(-1)
			}()
		}
	}()
	return cl
}

func (cl *countingListener) port() uint16 { return cl.ln.Addr().(*net.TCPAddr).AddrPort().Port() }

// tcpSegment4 is an IPv4 TCP segment with a correct checksum.
func tcpSegment4(src, dst netip.AddrPort, seq uint32, flags header.TCPFlags, window uint16, payload []byte) []byte {
	b := make([]byte, header.TCPMinimumSize+len(payload))
	h := header.TCP(b)
	h.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, DataOffset: header.TCPMinimumSize,
		Flags: flags, WindowSize: window,
	})
	copy(b[header.TCPMinimumSize:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpAddr(src.Addr()), tcpAddr(dst.Addr()), uint16(len(b)))
	h.SetChecksum(^checksum.Checksum(b, xsum))
	return ipv4Packet(src.Addr(), dst.Addr(), header.TCPProtocolNumber, b)
}

// watchSYNACKs drains everything the engine sends (so its queue never
// fills) and reports on the returned channel the first SYN-ACK to dst.
func watchSYNACKs(ctx context.Context, ep *channel.Endpoint, dst netip.AddrPort) <-chan struct{} {
	seen := make(chan struct{})
	go func() {
		pending := seen
		for pkt := ep.ReadContext(ctx); pkt != nil; pkt = ep.ReadContext(ctx) {
			if pending != nil && isSYNACKTo(pkt, dst) {
				close(pending)
				pending = nil
			}
			pkt.DecRef()
		}
	}()
	return seen
}

// isSYNACKTo reports whether pkt is an IPv4 SYN-ACK to dst.
func isSYNACKTo(pkt *stack.PacketBuffer, dst netip.AddrPort) bool {
	b := pkt.ToView().AsSlice()
	if pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber || len(b) < header.IPv4MinimumSize {
		return false
	}
	ip := header.IPv4(b)
	if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.DestinationAddress() != tcpAddr(dst.Addr()) {
		return false
	}
	th := header.TCP(ip.Payload())
	return len(th) >= header.TCPMinimumSize && th.DestinationPort() == dst.Port() &&
		th.Flags().Contains(header.TCPFlagSyn|header.TCPFlagAck)
}

// TestSYNFloodBounded: a guest sends thousands of SYNs it never completes.
// The host connections the engine opens for them stay bounded by the
// per-source limit, and another guest address still gets its connection
// answered.
func TestSYNFloodBounded(t *testing.T) {
	noLeaks(t)
	const flood, perSource, total = 3000, 64, 256
	srv := newCountingListener(t)
	e, ep := bareEngine(t, WithSYNLimits(total, perSource))
	dst := netip.AddrPortFrom(gw4, srv.port())
	for i := range flood {
		src := netip.AddrPortFrom(guest4, uint16(20000+i))
		inject(ep, header.IPv4ProtocolNumber, tcpSegment4(src, dst, 1000, header.TCPFlagSyn, 65535, nil))
	}
	eventually(t, 10*time.Second, "SYNs over the per-source limit dropped", func() bool {
		return e.Stats().SYNDropped.Load() >= flood-perSource
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.101"), 40000)
	seen := watchSYNACKs(ctx, ep, other)
	inject(ep, header.IPv4ProtocolNumber, tcpSegment4(other, dst, 5000, header.TCPFlagSyn, 65535, nil))
	select {
	case <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("a second guest address got no SYN-ACK while the first flooded")
	}
	if m := srv.max.Load(); m > perSource+1 {
		t.Errorf("%d host connections open at once for half-open guest connections, want <= %d", m, perSource+1)
	}
	t.Logf("flood of %d SYNs: %d dropped, at most %d host connections open at once",
		flood, e.Stats().SYNDropped.Load(), srv.max.Load())
}

// TestZeroWindowBackpressure: a guest connection whose receiver stops
// reading (its window closes) must stop the engine reading from the host
// socket, so a fast host sender is held back by the kernel instead of
// filling the engine's memory; other connections keep working, and the
// data arrives whole once the guest reads again.
func TestZeroWindowBackpressure(t *testing.T) {
	noLeaks(t)
	const size = 64 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	var written atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for off := 0; off < size; off += 64 << 10 {
			n, err := c.Write(data[off : off+64<<10])
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()

	tb := newTestBed(t, testConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := tb.dialTCP(ctx, netip.AddrPortFrom(gw4, ln.Addr().(*net.TCPAddr).AddrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The guest does not read: wait until the host sender stops making
	// progress.
	last := int64(-1)
	eventually(t, 30*time.Second, "host sender stalled by the closed window", func() bool {
		time.Sleep(300 * time.Millisecond)
		w := written.Load()
		stalled := w == last
		last = w
		return stalled
	})
	// Kernel socket buffers on both loopback ends (a few MiB each) plus the
	// engine's own bounded buffers; never the whole 64 MiB.
	if w := written.Load(); w > 32<<20 {
		t.Fatalf("host wrote %d MiB while the guest read nothing: the engine buffers without bound", w>>20)
	}
	t.Logf("host sender stalled after %d KiB with the guest's window closed", written.Load()>>10)

	// Another connection works meanwhile.
	echo := echoServer(t)
	ec, err := tb.dialTCP(ctx, netip.AddrPortFrom(gw4, echo.Port()))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("still served")
	ec.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ec.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(ec, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo during the stall: %q, %v", got, err)
	}
	ec.Close()

	// The guest reads again: everything arrives, in order.
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	if n, err := io.Copy(h, io.LimitReader(c, size)); err != nil || n != size {
		t.Fatalf("read %d bytes after the stall: %v", n, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("data corrupted after the stall")
	}
}

// udpDatagram is a UDP header and payload with a correct checksum (IPv4
// or IPv6: the pseudo-header takes either).
func udpDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(payload))
	h := header.UDP(b)
	h.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpAddr(src.Addr()), tcpAddr(dst.Addr()), uint16(len(b)))
	h.SetChecksum(^checksum.Checksum(b, xsum))
	return b
}

// fragment4 is one IPv4 fragment of a UDP datagram: part starts at byte
// off (a multiple of 8) of the datagram.
func fragment4(src, dst netip.Addr, id uint16, off int, more bool, part []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(part))
	h := header.IPv4(b)
	var flags uint8
	if more {
		flags = header.IPv4FlagMoreFragments
	}
	h.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), ID: id, Flags: flags, FragmentOffset: uint16(off), TTL: 64,
		Protocol: uint8(udp.ProtocolNumber), SrcAddr: tcpAddr(src), DstAddr: tcpAddr(dst),
	})
	h.SetChecksum(^h.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], part)
	return b
}

// drainOut discards what the engine sends until ctx ends.
func drainOut(ctx context.Context, ep *channel.Endpoint) {
	go func() {
		for pkt := ep.ReadContext(ctx); pkt != nil; pkt = ep.ReadContext(ctx) {
			pkt.DecRef()
		}
	}()
}

// TestOverlappingFragments: IPv4 fragments that overlap (teardrop-style)
// are never reassembled into something forwarded to the host, a flood of
// incomplete datagrams stays bounded, and a well-formed fragmented datagram
// sent afterwards is delivered intact.
func TestOverlappingFragments(t *testing.T) {
	noLeaks(t)
	srv, count := udpEchoCounter(t, "127.0.0.1:0")
	_, ep := bareEngine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drainOut(ctx, ep)

	src := netip.AddrPortFrom(guest4, 33333)
	dst := netip.AddrPortFrom(gw4, srv.Port())
	payload := bytes.Repeat([]byte("overlap!"), 250) // 2000 bytes
	dgram := udpDatagram(src, dst, payload)
	send := func(id uint16, off int, more bool, part []byte) {
		inject(ep, header.IPv4ProtocolNumber, fragment4(src.Addr(), dst.Addr(), id, off, more, part))
	}

	// Overlaps: a second fragment starting inside the first, with other
	// bytes; and a fragment entirely inside an earlier one.
	send(1, 0, true, dgram[:1480])
	send(1, 1000, false, bytes.Repeat([]byte{0xEE}, len(dgram)-1000))
	send(2, 0, true, dgram[:1480])
	send(2, 8, true, dgram[8:16])
	send(2, 1480, false, dgram[1480:])
	// A flood of first fragments whose rest never comes: the reassembler
	// must bound and expire them.
	for id := range uint16(5000) {
		send(1000+id, 0, true, dgram[:1480])
	}
	// A well-formed fragmented datagram.
	send(9, 0, true, dgram[:1480])
	send(9, 1480, false, dgram[1480:])

	eventually(t, 10*time.Second, "the well-formed datagram reaches the host", func() bool { return count.Load() >= 1 })
	// Give anything wrongly reassembled the same chance to arrive.
	time.Sleep(200 * time.Millisecond)
	if n := count.Load(); n != 1 {
		t.Fatalf("host received %d datagrams, want only the well-formed one", n)
	}
}

// fragment6 is one IPv6 fragment (a Fragment extension header, then part,
// which starts at byte off of the fragmentable part) of a UDP datagram.
func fragment6(src, dst netip.Addr, id uint32, off int, more bool, part []byte) []byte {
	b := make([]byte, header.IPv6FragmentHeaderSize+len(part))
	b[0] = uint8(header.UDPProtocolNumber)
	offFlags := uint16(off)
	if more {
		offFlags |= 1
	}
	binary.BigEndian.PutUint16(b[2:], offFlags)
	binary.BigEndian.PutUint32(b[4:], id)
	copy(b[header.IPv6FragmentHeaderSize:], part)
	return ipv6Packet(src, dst, header.IPv6FragmentHeader, 64, b)
}

// TestOverlappingFragments6: the IPv6 counterpart; RFC 5722 says a
// datagram with overlapping fragments is dropped whole.
func TestOverlappingFragments6(t *testing.T) {
	noLeaks(t)
	srv, count := udpEchoCounter(t, "[::1]:0")
	_, ep := bareEngine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drainOut(ctx, ep)

	src := netip.AddrPortFrom(netip.MustParseAddr("fd00::100"), 33333)
	dst := netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), srv.Port())
	payload := bytes.Repeat([]byte("overlap6"), 250)
	dgram := udpDatagram(src, dst, payload)
	send := func(id uint32, off int, more bool, part []byte) {
		inject(ep, header.IPv6ProtocolNumber, fragment6(src.Addr(), dst.Addr(), id, off, more, part))
	}
	send(1, 0, true, dgram[:1280])
	send(1, 1000, false, bytes.Repeat([]byte{0xEE}, len(dgram)-1000))
	for id := range uint32(2000) {
		send(1000+id, 0, true, dgram[:1280])
	}
	send(9, 0, true, dgram[:1280])
	send(9, 1280, false, dgram[1280:])

	eventually(t, 10*time.Second, "the well-formed datagram reaches the host", func() bool { return count.Load() >= 1 })
	time.Sleep(200 * time.Millisecond)
	if n := count.Load(); n != 1 {
		t.Fatalf("host received %d datagrams, want only the well-formed one", n)
	}
}
