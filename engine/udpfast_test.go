package engine

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
)

// Test addresses of the fast path's frames: the guest's, as newTestBed
// configures it, and the gateway (the host's loopback).
var (
	fastGuest4 = netip.MustParseAddr("10.0.2.100")
	fastGW4    = netip.MustParseAddr("10.0.2.2")
	fastGuest6 = netip.MustParseAddr("fd00::100")
	fastGW6    = netip.MustParseAddr("fd00::2")
)

// udpFrameOpts describes a test frame; the zero value of each field is the
// well-formed choice.
type udpFrameOpts struct {
	src, dst         netip.Addr
	sport, dport     uint16
	payload          []byte
	badIPCsum        bool
	badUDPCsum       bool
	zeroUDPCsum      bool
	udpLenDelta      int // added to the UDP length field
	ipLenDelta       int // added to the IPv4 total / IPv6 payload length
	flagsFrag        uint16
	ipOptions        bool // IPv4: a 4-byte NOP option (IHL 6)
	nextHeader       uint8
	trailing         int // bytes after the IP packet (Ethernet padding)
	etherType        uint16
	ipVersionNibble  uint8
	noFixIPChecksums bool
}

// buildUDPFrame builds an Ethernet frame of a UDP datagram from o.
func buildUDPFrame(o udpFrameOpts) []byte {
	ipHdr := header.IPv4MinimumSize
	v6 := o.src.Is6()
	if v6 {
		ipHdr = header.IPv6MinimumSize
	} else if o.ipOptions {
		ipHdr += 4
	}
	udpLen := header.UDPMinimumSize + len(o.payload)
	b := make([]byte, header.EthernetMinimumSize+ipHdr+udpLen+o.trailing)
	et := o.etherType
	if et == 0 {
		et = uint16(header.IPv4ProtocolNumber)
		if v6 {
			et = uint16(header.IPv6ProtocolNumber)
		}
	}
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: GatewayMAC, Type: tcpip.NetworkProtocolNumber(et)})
	ip := b[header.EthernetMinimumSize:]
	uh := header.UDP(ip[ipHdr : ipHdr+udpLen])
	uh.Encode(&header.UDPFields{SrcPort: o.sport, DstPort: o.dport, Length: uint16(udpLen + o.udpLenDelta)})
	copy(uh.Payload(), o.payload)
	src, dst := tcpAddr(o.src), tcpAddr(o.dst)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(udpLen))
	xsum = checksum.Checksum(o.payload, xsum)
	uh.SetChecksum(^uh.CalculateChecksum(xsum))
	switch {
	case o.zeroUDPCsum:
		uh.SetChecksum(0)
	case o.badUDPCsum:
		uh.SetChecksum(uh.Checksum() + 1)
	}
	proto := uint8(header.UDPProtocolNumber)
	if o.nextHeader != 0 {
		proto = o.nextHeader
	}
	if v6 {
		h := header.IPv6(ip)
		h.Encode(&header.IPv6Fields{PayloadLength: uint16(udpLen + o.ipLenDelta), TransportProtocol: tcpip.TransportProtocolNumber(proto), HopLimit: 64, SrcAddr: src, DstAddr: dst})
	} else {
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{TotalLength: uint16(ipHdr + udpLen + o.ipLenDelta), TTL: 64, Protocol: proto, SrcAddr: src, DstAddr: dst, Flags: uint8(o.flagsFrag >> 13), FragmentOffset: (o.flagsFrag & 0x1fff) << 3})
		if o.ipOptions {
			ip[0] = 0x46
			copy(ip[header.IPv4MinimumSize:], []byte{1, 1, 1, 0})
		}
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		if o.badIPCsum {
			h.SetChecksum(h.Checksum() + 1)
		}
	}
	if o.ipVersionNibble != 0 {
		ip[0] = o.ipVersionNibble<<4 | ip[0]&0xf
	}
	return b
}

func TestParseUDPFrame(t *testing.T) {
	p := []byte("hello")
	base4 := udpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 1000, dport: 2000, payload: p}
	base6 := udpFrameOpts{src: fastGuest6, dst: fastGW6, sport: 1000, dport: 2000, payload: p}
	with := func(o udpFrameOpts, f func(*udpFrameOpts)) udpFrameOpts { f(&o); return o }
	for _, tc := range []struct {
		name   string
		o      udpFrameOpts
		ok     bool
		udpLen int
	}{
		{"v4", base4, true, 13},
		{"v6", base6, true, 13},
		{"v4 padded", with(base4, func(o *udpFrameOpts) { o.trailing = 20 }), true, 13},
		{"v4 udp shorter than ip", with(base4, func(o *udpFrameOpts) { o.udpLenDelta = -2 }), true, 11},
		{"v4 udp longer than ip", with(base4, func(o *udpFrameOpts) { o.udpLenDelta = 1 }), false, 0},
		{"v4 udp length < 8", with(base4, func(o *udpFrameOpts) { o.udpLenDelta = -6 }), false, 0},
		{"v4 ip longer than frame", with(base4, func(o *udpFrameOpts) { o.ipLenDelta = 1 }), false, 0},
		{"v4 ip shorter than udp", with(base4, func(o *udpFrameOpts) { o.ipLenDelta = -1 }), false, 0},
		{"v4 more fragments", with(base4, func(o *udpFrameOpts) { o.flagsFrag = 0x2000 }), false, 0},
		{"v4 fragment offset", with(base4, func(o *udpFrameOpts) { o.flagsFrag = 0x0001 }), false, 0},
		{"v4 dont fragment", with(base4, func(o *udpFrameOpts) { o.flagsFrag = 0x4000 }), true, 13},
		{"v4 options", with(base4, func(o *udpFrameOpts) { o.ipOptions = true }), false, 0},
		{"v4 tcp", with(base4, func(o *udpFrameOpts) { o.nextHeader = 6 }), false, 0},
		{"v4 version 5", with(base4, func(o *udpFrameOpts) { o.ipVersionNibble = 5 }), false, 0},
		{"v6 hop-by-hop", with(base6, func(o *udpFrameOpts) { o.nextHeader = 0 + 60 }), false, 0},
		{"v6 payload longer than frame", with(base6, func(o *udpFrameOpts) { o.ipLenDelta = 1 }), false, 0},
		{"v6 udp longer than payload", with(base6, func(o *udpFrameOpts) { o.udpLenDelta = 1 }), false, 0},
		{"v6 version 4", with(base6, func(o *udpFrameOpts) { o.ipVersionNibble = 4 }), false, 0},
		{"arp", with(base4, func(o *udpFrameOpts) { o.etherType = uint16(header.ARPProtocolNumber) }), false, 0},
		{"vlan", with(base4, func(o *udpFrameOpts) { o.etherType = 0x8100 }), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := buildUDPFrame(tc.o)
			d, ok := parseUDPFrame(f, len(f))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if d.udpLen != tc.udpLen {
				t.Errorf("udpLen = %d, want %d", d.udpLen, tc.udpLen)
			}
			want := stack.TransportEndpointID{LocalPort: 2000, LocalAddress: tcpAddr(tc.o.dst), RemotePort: 1000, RemoteAddress: tcpAddr(tc.o.src)}
			if d.id != want {
				t.Errorf("id = %+v, want %+v", d.id, want)
			}
			if got := f[d.udpOff+header.UDPMinimumSize : d.udpOff+d.udpLen]; !bytes.Equal(got, p[:d.udpLen-header.UDPMinimumSize]) {
				t.Errorf("payload %q", got)
			}
			for n := 0; n < len(f); n++ {
				if _, ok := parseUDPFrame(f[:n], len(f)); ok && n < d.udpOff+header.UDPMinimumSize {
					t.Fatalf("accepted with only %d header bytes", n)
				}
				if _, ok := parseUDPFrame(f[:n], n); ok && n < len(f)-tc.o.trailing {
					t.Fatalf("accepted a frame cut to %d bytes", n)
				}
			}
		})
	}
}

// fastBed is a test bed with an established UDP flow from the guest to a
// host socket on the loopback, for each address family, to offer frames to
// the fast path and to the slow path (the stack) and compare.
type fastBed struct {
	tb    *testBed
	sinks map[bool]*net.UDPConn // by IPv6
}

func newFastBed(t testing.TB, validated bool) *fastBed {
	t.Helper()
	fb := &fastBed{sinks: map[bool]*net.UDPConn{}}
	fb.tb = newTestBed(t, testConfig())
	if validated {
		// Set before any traffic: the NIC reads it per packet.
		fb.tb.w.a.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	}
	for _, v6 := range []bool{false, true} {
		ip := net.IPv4(127, 0, 0, 1)
		if v6 {
			ip = net.IPv6loopback
		}
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		fb.sinks[v6] = pc
	}
	return fb
}

func (fb *fastBed) port(v6 bool) uint16 { return uint16(fb.sinks[v6].LocalAddr().(*net.UDPAddr).Port) }

// establish makes sure the flow from the guest's port 4000 to the sink of
// the family exists, sending a datagram through the guest's stack if not,
// and drains the sink.
func (fb *fastBed) establish(t testing.TB, v6 bool) {
	t.Helper()
	gw, src := fastGW4, fastGuest4
	if v6 {
		gw, src = fastGW6, fastGuest6
	}
	id := stack.TransportEndpointID{LocalPort: fb.port(v6), LocalAddress: tcpAddr(gw), RemotePort: 4000, RemoteAddress: tcpAddr(src)}
	if fb.tb.eng.udp.lookup(id) == nil {
		f := buildUDPFrame(udpFrameOpts{src: src, dst: gw, sport: 4000, dport: fb.port(v6), payload: []byte("open")})
		fb.slow(f)
		if fb.tb.eng.udp.lookup(id) == nil {
			t.Fatalf("no flow after the first datagram")
		}
	}
	fb.drain(t, v6)
}

// slow delivers frame to the stack as the link would.
func (fb *fastBed) slow(frame []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	if link.ParseEthernetHeader(pkt) {
		fb.tb.w.a.InjectInbound(pkt.NetworkProtocolNumber, pkt)
	}
}

// fast offers frame to the fast path in two segments (the first split
// bytes, at least the headers' worth, and the rest), and flushes.
func (fb *fastBed) fast(frame []byte, split int, validated bool) bool {
	split = min(max(split, 64), len(frame))
	segs := [][]byte{frame[:split]}
	if split < len(frame) {
		segs = append(segs, frame[split:])
	}
	u := fb.tb.eng.udp
	taken := u.takeFrame(link.Frame{Segs: segs, ChecksumValidated: validated})
	u.batch.flush(u)
	return taken
}

type sunk struct {
	from    netip.AddrPort
	payload string
}

// drain returns the datagrams queued at the family's sink. Loopback
// delivery happens inside the sender's system call, so all that was sent
// is there.
func (fb *fastBed) drain(t testing.TB, v6 bool) []sunk {
	t.Helper()
	rc, err := fb.sinks[v6].SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out []sunk
	buf := make([]byte, maxDatagram)
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		if err := rc.Control(func(fd uintptr) {
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		}); err != nil {
			t.Fatal(err)
		}
		if errors.Is(rerr, unix.EAGAIN) {
			return out
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
		var ap netip.AddrPort
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *unix.SockaddrInet6:
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		}
		out = append(out, sunk{ap, string(buf[:n])})
	}
}

// check offers frame to the fast path and, if it takes it, to the slow
// path too: both must have sent the same single datagram from the same
// host socket. A frame the fast path declines must not have been sent.
func (fb *fastBed) check(t *testing.T, frame []byte, split int, validated bool) bool {
	t.Helper()
	for _, v6 := range []bool{false, true} {
		fb.establish(t, v6)
	}
	taken := fb.fast(frame, split, validated)
	fast := append(fb.drain(t, false), fb.drain(t, true)...)
	if !taken {
		if len(fast) != 0 {
			t.Fatalf("fast path declined the frame but sent %d datagrams", len(fast))
		}
		return false
	}
	fb.slow(frame)
	slow := append(fb.drain(t, false), fb.drain(t, true)...)
	if len(fast) != 1 || len(slow) != 1 || fast[0] != slow[0] {
		t.Fatalf("fast path sent %+v, slow path %+v: want the same single datagram", fast, slow)
	}
	return true
}

// TestUDPFastPathAgrees: frames of established flows are taken by the fast
// path exactly when they are well-formed, and then sent as the stack would
// have sent them; malformed ones, fragments, other ports or protocols are
// left to the stack. With the link's checksum offload (validated) the
// checksums are not checked, as the stack does not check them either.
func TestUDPFastPathAgrees(t *testing.T) {
	for _, validated := range []bool{false, true} {
		fb := newFastBed(t, validated)
		with := func(o udpFrameOpts, f func(*udpFrameOpts)) udpFrameOpts { f(&o); return o }
		big := bytes.Repeat([]byte("0123456789abcdef"), 300) // two segments, over a batch slot
		for _, v6 := range []bool{false, true} {
			base := udpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 4000, dport: fb.port(v6), payload: []byte("datagram")}
			if v6 {
				base.src, base.dst = fastGuest6, fastGW6
			}
			for _, tc := range []struct {
				name string
				o    udpFrameOpts
				want bool
			}{
				{"good", base, true},
				{"big", with(base, func(o *udpFrameOpts) { o.payload = big }), true},
				{"empty", with(base, func(o *udpFrameOpts) { o.payload = nil }), true},
				{"padded", with(base, func(o *udpFrameOpts) { o.trailing = 7 }), true},
				{"udp shorter", with(base, func(o *udpFrameOpts) { o.udpLenDelta = -3 }), validated}, // the checksum covers the longer length
				{"bad udp checksum", with(base, func(o *udpFrameOpts) { o.badUDPCsum = true }), validated},
				{"zero udp checksum", with(base, func(o *udpFrameOpts) { o.zeroUDPCsum = true }), validated || !v6},
				{"bad ip checksum", with(base, func(o *udpFrameOpts) { o.badIPCsum = true }), validated || v6},
				{"fragment", with(base, func(o *udpFrameOpts) { o.flagsFrag = 0x2000 }), v6},
				{"other source port", with(base, func(o *udpFrameOpts) { o.sport = 4001 }), false},
				{"other destination", with(base, func(o *udpFrameOpts) { o.dport = 1 }), false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					f := buildUDPFrame(tc.o)
					if got := fb.check(t, f, 2048, validated); got != tc.want {
						t.Errorf("v6=%v validated=%v: taken %v, want %v", v6, validated, got, tc.want)
					}
				})
			}
		}
	}
}

// TestUDPFastPathBatch: datagrams taken in a row go out in order, in
// batches, and all of them arrive; a flush with nothing kept is a no-op.
func TestUDPFastPathBatch(t *testing.T) {
	fb := newFastBed(t, true)
	fb.establish(t, false)
	u := fb.tb.eng.udp
	const n = 3*udpBatchMax + 5
	before := u.forwarded.Load()
	for i := range n {
		f := buildUDPFrame(udpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 4000, dport: fb.port(false), payload: []byte{byte(i), byte(i >> 8)}})
		if !u.takeFrame(link.Frame{Segs: [][]byte{f}, ChecksumValidated: true}) {
			t.Fatalf("datagram %d not taken", i)
		}
	}
	u.batch.flush(u)
	u.batch.flush(u)
	got := fb.drain(t, false)
	if len(got) != n {
		t.Fatalf("%d datagrams arrived, want %d", len(got), n)
	}
	for i, d := range got {
		if d.payload != string([]byte{byte(i), byte(i >> 8)}) {
			t.Fatalf("datagram %d is %q: out of order", i, d.payload)
		}
	}
	if fwd := u.forwarded.Load() - before; fwd != n {
		t.Errorf("forwarded %d, want %d", fwd, n)
	}
}

// FuzzUDPFastPath: for any frame, the fast path either declines it
// (sending nothing) or sends exactly what the stack's path sends for it.
func FuzzUDPFastPath(f *testing.F) {
	seeds := []udpFrameOpts{
		{src: fastGuest4, dst: fastGW4, sport: 4000, payload: []byte("x")},
		{src: fastGuest4, dst: fastGW4, sport: 4000, payload: bytes.Repeat([]byte("y"), 3000)},
		{src: fastGuest4, dst: fastGW4, sport: 4000, payload: []byte("z"), zeroUDPCsum: true},
		{src: fastGuest4, dst: fastGW4, sport: 4000, payload: []byte("z"), udpLenDelta: -1},
		{src: fastGuest4, dst: fastGW4, sport: 4000, payload: []byte("zz"), ipLenDelta: -1, trailing: 1},
		{src: fastGuest6, dst: fastGW6, sport: 4000, payload: []byte("v6")},
		{src: fastGuest6, dst: fastGW6, sport: 4000, payload: []byte("v6"), trailing: 3},
	}
	var beds [2]*fastBed
	for _, validated := range []bool{false, true} {
		beds[b2i(validated)] = newFastBed(f, validated)
	}
	for _, s := range seeds {
		s.dport = beds[0].port(s.src.Is6())
		frame := buildUDPFrame(s)
		f.Add(frame, uint16(2048), false)
		f.Add(frame, uint16(70), true)
	}
	f.Fuzz(func(t *testing.T, frame []byte, split uint16, validated bool) {
		fb := beds[b2i(validated)]
		// The seeds' ports are those of the first bed's sinks: aim them
		// at this bed's.
		if p, ok := parseUDPFrame(frame, len(frame)); ok {
			v6 := p.netProto == header.IPv6ProtocolNumber
			if p.id.LocalPort == beds[0].port(v6) {
				frame = bytes.Clone(frame)
				header.UDP(frame[p.udpOff:]).SetDestinationPort(fb.port(v6))
			}
		}
		fb.check(t, frame, int(split), validated)
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestUDPFastPathAllocs: taking a datagram allocates nothing (a batch's
// sendmmsg allocates a little, once per udpBatchMax datagrams).
func TestUDPFastPathAllocs(t *testing.T) {
	fb := newFastBed(t, true)
	fb.establish(t, false)
	u := fb.tb.eng.udp
	f := buildUDPFrame(udpFrameOpts{src: fastGuest4, dst: fastGW4, sport: 4000, dport: fb.port(false), payload: []byte("x")})
	fr := link.Frame{Segs: [][]byte{f}, ChecksumValidated: true}
	allocs := testing.AllocsPerRun(4*udpBatchMax, func() {
		if !u.takeFrame(fr) {
			t.Fatal("datagram not taken")
		}
	})
	u.batch.flush(u)
	if allocs != 0 {
		t.Errorf("%v allocations per datagram taken, want 0", allocs)
	}
}
