package engine

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
)

// fuzzPort is the destination port of the seeds' frames; every frame's
// destination is pinned to the bed's listener anyway (pinToGateway).
const fuzzPort = 7777

// Flags of a record of FuzzTCPFastFrames's input.
const (
	// fuzzFix has the frame repaired before it is offered: pointed at a
	// forwarded connection from its source (fuzzForward), the ACK number
	// taken as relative to the connection's initial sequence number (if
	// it exists), and the checksums set.
	fuzzFix = 1 << iota
	// fuzzValidated offers the frame as one whose checksums the link
	// validated.
	fuzzValidated
	// fuzzForward opens a forwarded connection towards the guest (port
	// 4000 of fastGuest4, or of fastGuest6 if the frame is the byte 6)
	// instead of offering the frame: its SYN is sent and the fast path
	// waits for the guest's SYN-ACK. A repaired frame from that guest
	// port goes to it.
	fuzzForward
)

// fuzzGuestMAC is the guest's link address in FuzzTCPFastFrames.
const fuzzGuestMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x64")

// fuzzBed is an engine on a link.Endpoint whose other end is drained (the
// guest is the fuzzer, calling takeFrame itself), with a host listener on
// 127.0.0.1 that reads what comes and answers every connection with some
// data.
type fuzzBed struct {
	eng  *Engine
	peer int                // the guest's end of the socketpair, drained
	lns  []*net.TCPListener // on 127.0.0.1 and ::1, with the same port
	port uint16
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]struct{}
	fwds connSet // the forwarded connections (fuzzForward)
}

func newFuzzBed(tb testing.TB) *fuzzBed {
	tb.Helper()
	ours, peer, err := linktest.SeqpacketPair()
	if err != nil {
		tb.Fatal(err)
	}
	ep, err := link.New(ours, link.Options{MTU: 1500, Address: GatewayMAC})
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := New(testConfig(), ep, WithoutServices())
	if err != nil {
		tb.Fatal(err)
	}
	lns := loopbackListeners(tb)
	fb := &fuzzBed{eng: eng, peer: peer, lns: lns, port: uint16(lns[0].Addr().(*net.TCPAddr).Port), open: map[net.Conn]struct{}{}}
	// Frames to the guest: read and dropped (a timeout lets the loop
	// notice the end).
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(peer, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		tb.Fatal(err)
	}
	stop := make(chan struct{})
	fb.wg.Add(1 + len(lns))
	go func() {
		defer fb.wg.Done()
		buf := make([]byte, 1<<16)
		for {
			select {
			case <-stop:
				return
			default:
			}
			unix.Read(peer, buf)
		}
	}()
	for _, ln := range lns {
		go fb.serve(ln)
	}
	tb.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		eng.Close()
		close(stop)
		fb.mu.Lock()
		for c := range fb.open {
			c.Close()
		}
		fb.mu.Unlock()
		fb.wg.Wait()
		unix.Close(peer)
	})
	return fb
}

// loopbackListeners listens on 127.0.0.1 and on ::1 with the same port.
func loopbackListeners(tb testing.TB) []*net.TCPListener {
	tb.Helper()
	for range 20 {
		ln4, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		ln6, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv6loopback, Port: ln4.Addr().(*net.TCPAddr).Port})
		if err == nil {
			return []*net.TCPListener{ln4, ln6}
		}
		ln4.Close()
	}
	tb.Fatal("no port free on both 127.0.0.1 and ::1")
	return nil
}

// serve accepts host connections: each gets 100 KB, and what it sends is
// read until it ends.
func (fb *fuzzBed) serve(ln *net.TCPListener) {
	defer fb.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fb.mu.Lock()
		fb.open[c] = struct{}{}
		fb.mu.Unlock()
		fb.wg.Add(1)
		go func() {
			defer fb.wg.Done()
			defer func() {
				fb.mu.Lock()
				delete(fb.open, c)
				fb.mu.Unlock()
				c.Close()
			}()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go c.Write(make([]byte, 100<<10))
			io.Copy(io.Discard, c)
		}()
	}
}

// openForward opens a forwarded connection to the guest's port 4000 whose
// host side is a connection to the bed's listener (fuzzForward).
func (fb *fuzzBed) openForward(tb testing.TB, v6 bool) {
	src, guest, ln := fastGW4, netip.AddrPortFrom(fastGuest4, 4000), fb.lns[0]
	if v6 {
		src, guest, ln = fastGW6, netip.AddrPortFrom(fastGuest6, 4000), fb.lns[1]
	}
	sched, err := fb.eng.tcp.relay()
	if err != nil {
		tb.Fatal(err)
	}
	c := fb.eng.fast.newActive(src, guest, fuzzGuestMAC)
	if c == nil {
		tb.Fatal("no source port free")
	}
	hc, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	fd, err := detachFD(hc)
	if err != nil {
		tb.Fatal(err)
	}
	c.start(fd, sched, &fb.fwds)
}

// offer repairs (fuzzFix) and offers one frame to the fast path, as the
// link's reader would, then flushes; a fuzzForward record opens a
// forwarded connection instead.
func (fb *fuzzBed) offer(tb testing.TB, frame []byte, flags byte, split int) {
	if flags&fuzzForward != 0 {
		fb.openForward(tb, len(frame) == 1 && frame[0] == 6)
		return
	}
	f := fb.eng.fast
	pinToGateway(frame, fb.port)
	if flags&fuzzFix != 0 {
		fb.fix(frame)
	}
	first := min(len(frame), 2048)
	segs := [][]byte{frame[:first]}
	// The rest in pieces of split bytes (the link's later read buffers;
	// even-sized, as the link's are).
	split = max(split&^1, 2)
	for rest := frame[first:]; len(rest) > 0; {
		n := min(split, len(rest))
		segs = append(segs, rest[:n])
		rest = rest[n:]
	}
	if len(frame) == 0 {
		segs = [][]byte{frame}
	}
	f.takeFrame(link.Frame{Segs: segs, ChecksumValidated: flags&fuzzValidated != 0})
	f.flush()
}

// pinToGateway rewrites the destination of a segment the fast path could
// take to the gateway of its family (the host's loopback) and port, the
// test's listener, so that no input makes the engine connect anywhere
// else: not to an address on the Internet, not to the host's DNS server
// (10.0.2.3), not to another service on the host's loopback (the engine's
// tests run in the host's namespaces). It runs before the checksums are
// set, so an input that is not repaired may fail them.
func pinToGateway(frame []byte, port uint16) {
	s, ok := parseTCPFrame(frame, len(frame))
	if !ok {
		return
	}
	header.TCP(frame[s.tcpOff:]).SetDestinationPort(port)
	if s.netProto == header.IPv4ProtocolNumber {
		gw := fastGW4.As4()
		copy(frame[ethLen+16:ethLen+20], gw[:])
		return
	}
	gw := fastGW6.As16()
	copy(frame[ethLen+24:ethLen+40], gw[:])
}

// fix points a frame from a forwarded connection's guest port at that
// connection (pinToGateway pointed every frame at the listener), makes its
// ACK number relative to the connection's initial sequence number, and
// sets its checksums.
func (fb *fuzzBed) fix(frame []byte) {
	s, ok := parseTCPFrame(frame, len(frame))
	if !ok {
		return
	}
	th := header.TCP(frame[s.tcpOff:])
	f := fb.eng.fast
	if c := fb.forwardFrom(s.id); c != nil {
		// pinToGateway pointed it at the listener: a forward's
		// connection has a port of its own.
		th.SetDestinationPort(c.tpl.id.LocalPort)
		s.id.LocalPort = c.tpl.id.LocalPort
	}
	f.mu.Lock()
	c := f.conns[s.id]
	f.mu.Unlock()
	if c != nil {
		c.mu.Lock()
		iss := c.iss
		c.mu.Unlock()
		th.SetAckNumber(iss + th.AckNumber())
	}
	if s.netProto == header.IPv4ProtocolNumber {
		ip := header.IPv4(frame[ethLen:])
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	th.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, s.id.RemoteAddress, s.id.LocalAddress, uint16(s.end-s.tcpOff))
	th.SetChecksum(^checksum.Checksum(frame[s.tcpOff:s.end], sum))
}

// forwardFrom returns a forwarded connection to the guest's end of id,
// if one exists.
func (fb *fuzzBed) forwardFrom(id stack.TransportEndpointID) *fastConn {
	f := fb.eng.fast
	f.mu.Lock()
	defer f.mu.Unlock()
	for cid, c := range f.conns {
		if c.owner != nil && cid.RemoteAddress == id.RemoteAddress && cid.RemotePort == id.RemotePort && cid.LocalAddress == id.LocalAddress {
			return c
		}
	}
	return nil
}

// reset ends every fast-path connection, so that each input starts
// afresh.
func (fb *fuzzBed) reset() {
	for _, c := range (&fpBed{eng: fb.eng}).conns() {
		c.abort()
	}
}

// fuzzRecords encodes frames as FuzzTCPFastFrames's input: per frame a
// flags byte, a big-endian 16-bit length, the frame.
func fuzzRecords(flags byte, frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = append(b, flags)
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

// fuzzSeeds are inputs that open a connection and use it: handshake,
// data, ACKs of the host's data, window changes, FIN, RST, a SYN again,
// in IPv4 and IPv6.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, v6 := range []bool{false, true} {
		o := tcpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 4000, dport: fuzzPort, wnd: 65535}
		if v6 {
			o.src, o.dst = fastGuest6, fastGW6
		}
		seg := func(f func(*tcpFrameOpts)) []byte {
			c := o
			f(&c)
			return buildTCPFrame(c)
		}
		syn := seg(func(c *tcpFrameOpts) {
			c.seq, c.flags = 1000, header.TCPFlagSyn
			c.opts = []byte{header.TCPOptionMSS, 4, 0x05, 0xb4, header.TCPOptionNOP, header.TCPOptionWS, 3, 7}
		})
		ack := func(seq, ack uint32, wnd uint16, flags header.TCPFlags, payload []byte) []byte {
			return seg(func(c *tcpFrameOpts) {
				c.seq, c.ack, c.wnd, c.flags, c.payload = seq, ack, wnd, header.TCPFlagAck|flags, payload
			})
		}
		hs := ack(1001, 1, 1024, 0, nil)
		data := ack(1001, 1, 1024, header.TCPFlagPsh, []byte("hello"))
		gap := ack(1100, 1, 1024, 0, []byte("gap"))
		acked := ack(1006, 1461, 1024, 0, nil)
		zero := ack(1006, 1461, 0, 0, nil)
		fin := ack(1006, 1461, 1024, header.TCPFlagFin, nil)
		rst := seg(func(c *tcpFrameOpts) { c.seq, c.flags = 1006, header.TCPFlagRst })
		dup := ack(1006, 1461, 1024, 0, nil)
		seeds = append(seeds,
			fuzzRecords(fuzzFix, syn),
			fuzzRecords(fuzzFix, syn, hs, data, acked, dup, dup, dup, fin),
			fuzzRecords(fuzzFix, syn, hs, gap, data, zero, acked, rst),
			fuzzRecords(fuzzFix, syn, syn, hs, syn, data, data, fin, fin, acked),
			fuzzRecords(fuzzFix|fuzzValidated, syn, hs, data, rst),
			fuzzRecords(fuzzFix, syn, rst, hs),
		)
		// Forwarded connections: the guest answers our SYN (sequence
		// numbers from 5000; ACK numbers relative to our ISN).
		fwd := fuzzRecords(fuzzForward, nil)
		if v6 {
			fwd = fuzzRecords(fuzzForward, []byte{6})
		}
		synack := seg(func(c *tcpFrameOpts) {
			c.seq, c.ack, c.flags = 5000, 1, header.TCPFlagSyn|header.TCPFlagAck
			c.opts = []byte{header.TCPOptionMSS, 4, 0x05, 0xb4, header.TCPOptionNOP, header.TCPOptionWS, 3, 7, header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionSACKPermitted, 2}
		})
		bare := seg(func(c *tcpFrameOpts) { c.seq, c.ack, c.flags = 5000, 1, header.TCPFlagSyn|header.TCPFlagAck })
		refused := seg(func(c *tcpFrameOpts) { c.seq, c.ack, c.flags = 0, 1, header.TCPFlagRst|header.TCPFlagAck })
		badAck := seg(func(c *tcpFrameOpts) { c.seq, c.ack, c.flags = 5000, 77, header.TCPFlagSyn|header.TCPFlagAck })
		fdata := ack(5001, 1, 1024, header.TCPFlagPsh, []byte("hello"))
		facked := ack(5006, 1461, 1024, 0, nil)
		ffin := ack(5006, 1461, 1024, header.TCPFlagFin, nil)
		frst := seg(func(c *tcpFrameOpts) { c.seq, c.flags = 5006, header.TCPFlagRst })
		join := func(recs ...[]byte) []byte { return bytes.Join(recs, nil) }
		seeds = append(seeds,
			join(fwd, fuzzRecords(fuzzFix, synack)),
			join(fwd, fuzzRecords(fuzzFix, synack, fdata, facked, ffin)),
			join(fwd, fuzzRecords(fuzzFix, bare, fdata, frst)),
			join(fwd, fuzzRecords(fuzzFix, refused)),
			join(fwd, fuzzRecords(fuzzFix, badAck, synack, synack, fdata)),
			join(fwd, fuzzRecords(fuzzFix|fuzzValidated, synack, syn, fdata, ffin)),
		)
	}
	return seeds
}

// FuzzTCPFastFrames feeds arbitrary frames to the fast path of an engine
// whose host side is a real loopback listener: it must never panic,
// deadlock or leak. An input is a sequence of records (flags, length,
// frame; see fuzzRecords); split cuts frames beyond 2048 bytes into
// several of the link's read buffers.
func FuzzTCPFastFrames(f *testing.F) {
	f.Cleanup(func() { goleak.VerifyNone(f) })
	fb := newFuzzBed(f)
	for _, s := range fuzzSeeds() {
		f.Add(s, uint16(4096))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		defer fb.reset()
		for n := 0; len(in) >= 3 && n < 64; n++ {
			flags := in[0]
			l := min(int(binary.BigEndian.Uint16(in[1:3])), len(in)-3)
			frame := append([]byte(nil), in[3:3+l]...)
			in = in[3+l:]
			fb.offer(t, frame, flags, int(split))
		}
		for _, c := range (&fpBed{eng: fb.eng}).conns() {
			if a := addrOf(c.tpl.id.LocalAddress); a != fastGW4 && a != fastGW6 {
				t.Fatalf("a connection to %v: the fuzzer must reach only the gateway", a)
			}
		}
	})
}

// TestTCPFastFramesSeeds runs FuzzTCPFastFrames's seeds with checks: the
// handshake seeds open a fast-path connection whose host side is
// accepted, and a reset removes it.
func TestTCPFastFramesSeeds(t *testing.T) {
	fb := newFuzzBed(t)
	for i, s := range fuzzSeeds() {
		in := s
		for len(in) >= 3 {
			l := int(binary.BigEndian.Uint16(in[1:3]))
			fb.offer(t, append([]byte(nil), in[3:3+l]...), in[0], 4096)
			in = in[3+l:]
		}
		if i%6 == 0 && fb.eng.fast.count() != 1 {
			t.Errorf("seed %d: %d fast-path connections after a SYN or a forward's SYN-ACK, want 1", i, fb.eng.fast.count())
		}
		fb.reset()
		if n := fb.eng.fast.count(); n != 0 {
			t.Errorf("seed %d: %d connections left after reset", i, n)
		}
	}
}

// TestTCPFastFramesPinned: whatever an input's destination, the frame
// offered goes to the gateway (the fuzzer must not make the engine connect
// anywhere but the host's loopback).
func TestTCPFastFramesPinned(t *testing.T) {
	for _, dst := range []string{"8.8.8.8", "10.0.2.3", "10.0.2.2", "2001:db8::1", "fd00::3"} {
		d := netip.MustParseAddr(dst)
		src := fastGuest4
		if d.Is6() {
			src = fastGuest6
		}
		f := buildTCPFrame(tcpFrameOpts{src: src, dst: d, sport: 1, dport: 2, flags: header.TCPFlagSyn})
		pinToGateway(f, 9)
		s, ok := parseTCPFrame(f, len(f))
		if !ok {
			t.Fatalf("%s: frame no longer parses", dst)
		}
		if got := addrOf(s.id.LocalAddress); got != fastGW4 && got != fastGW6 || s.id.LocalPort != 9 {
			t.Errorf("%s: destination %v port %d after pinning", dst, got, s.id.LocalPort)
		}
	}
}
