package engine

import (
	"net/netip"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// The UDP fast path: a guest datagram of a flow that already exists goes
// from the link's read buffers straight to the flow's host socket, without
// a PacketBuffer, gVisor's IP layer or its transport demuxer. At 2 Gbit/s
// of 1400-byte datagrams (netbench's UDP case) those cost about a quarter
// of the engine's CPU (perf), and the engine's CPU per datagram is what
// decides the loss when the guest, the engine and the host's receiver
// share two cores. Measured with scripts/netab udp at RATE=2G, 9 rounds,
// medians of engine CPU per datagram read from the TAP: 9.9 us before,
// 7.7 us with the fast path, 5.5 us with the batching of udpbatch.go as
// well (the C slirp4netns: 7.2 us); loss 75.2 / 69.2 / 66.1 % (C 68.6 %).
//
// It takes only what the slow path would have handed to udpNAT.forward for
// the same flow: an unfragmented IPv4 datagram without options, or an IPv6
// one whose next header is UDP, that passes the checks of the guard
// (source), gVisor's IP layer (version, lengths, header checksum), the UDP
// layer (length, checksum unless the link validated it) and that no gVisor
// endpoint claims. That the flow exists means its addresses and ports have
// been through the slow path once, so the stack's address checks and the
// outbound policy passed for exactly this 4-tuple; they depend on nothing
// that changes while the engine runs. Everything else (a first datagram,
// fragments, options, ICMP, ARP, TCP, DNS and DHCP to the engine's own
// services, anything malformed) goes the normal way, so errors, counters
// and ICMP answers stay as they were.

// TakeFrame implements link.FrameTaker for the link under the guard: the
// fast path for datagrams of established UDP flows.
func (g *guard) TakeFrame(fr link.Frame) bool {
	if len(fr.Segs) == 0 {
		return false
	}
	return g.e.udp.takeFrame(fr) || (g.e.fast != nil && g.e.fast.takeFrame(fr))
}

// udpFrame is an Ethernet frame's UDP datagram as parseUDPFrame found it.
type udpFrame struct {
	netProto tcpip.NetworkProtocolNumber
	// id is the stack's key for the datagram: local is its destination.
	id stack.TransportEndpointID
	// udpOff is the UDP header's offset in the frame, udpLen the UDP
	// length field (header and payload; the frame may hold more).
	udpOff, udpLen int
}

// Byte offsets of the headers the fast path reads.
const (
	ethLen      = header.EthernetMinimumSize
	ipv4FastLen = ethLen + header.IPv4MinimumSize // Ethernet + IPv4 without options
	ipv6FastLen = ethLen + header.IPv6MinimumSize
)

// parseUDPFrame parses an Ethernet frame of frameLen bytes whose first
// bytes are head (all of the headers, if it is one the fast path takes):
// an IP packet parseIPFrame accepts carrying UDP, whose UDP length fits its
// IP payload. Checksums are left to the caller.
func parseUDPFrame(head []byte, frameLen int) (udpFrame, bool) {
	ipf, ok := parseIPFrame(head, frameLen, header.UDPProtocolNumber, header.UDPMinimumSize)
	if !ok {
		return udpFrame{}, false
	}
	return udpFrameAt(head, ipf.l4Off, ipf.l4Len, ipf.netProto, ipf.src, ipf.dst)
}

// udpFrameAt reads the UDP header at off in head, whose IP payload is
// ipPayload bytes long, and returns the datagram's udpFrame if its UDP
// length fits that payload.
func udpFrameAt(head []byte, off, ipPayload int, netProto tcpip.NetworkProtocolNumber, src, dst tcpip.Address) (udpFrame, bool) {
	uh := header.UDP(head[off:])
	udpLen := int(uh.Length())
	if udpLen < header.UDPMinimumSize || udpLen > ipPayload {
		return udpFrame{}, false
	}
	return udpFrame{
		netProto: netProto,
		id: stack.TransportEndpointID{
			LocalPort: uh.DestinationPort(), LocalAddress: dst,
			RemotePort: uh.SourcePort(), RemoteAddress: src,
		},
		udpOff: off,
		udpLen: udpLen,
	}, true
}

// takeFrame forwards fr's datagram to its flow's host socket if the fast
// path may take it (see above), and reports whether it did.
func (u *udpNAT) takeFrame(fr link.Frame) bool {
	if len(fr.Segs) == 0 {
		return false
	}
	head := fr.Segs[0]
	d, ok := parseUDPFrame(head, fr.Len())
	if !ok || !u.admits(d, head, fr) {
		return false
	}
	f := u.lookup(d.id)
	if f == nil {
		return false // a first datagram: the slow path opens the flow
	}
	if u.e.stack.FindTransportEndpoint(d.netProto, udp.ProtocolNumber, d.id, nicID) != nil {
		return false // a stack endpoint claims it (as in the stack's demuxer)
	}
	if !u.batch.add(u, f, fr.Segs, d.udpOff+header.UDPMinimumSize, d.udpOff+d.udpLen) {
		return false
	}
	u.e.stack.Stats().UDP.PacketsReceived.Increment()
	return true
}

// FlushFrames implements link.FrameTaker: it sends the datagrams the fast
// path kept back.
func (g *guard) FlushFrames() {
	g.e.udp.batch.flush(g.e.udp)
	if g.e.fast != nil {
		g.e.fast.flush()
	}
}

// WantBusyPoll implements link.BusyPoller: a window is worth its CPU after
// segments of the TCP fast path, not after UDP datagrams alone (whose host
// sockets the window does not poll: under a UDP flood, polling only took
// CPU from the host's receiver, 2 Gbit/s loss 54 -> 60 %).
func (g *guard) WantBusyPoll() bool { return g.e.fast != nil && g.e.fast.wantBusyPoll() }

// BusyPoll implements link.BusyPoller: while the link's reader busy-polls,
// it also handles the events of the relayed connections' host sockets (a
// host's answer is then sent on without waking the relay's poller).
func (g *guard) BusyPoll() bool {
	s := g.e.tcp.sched.Load()
	return s != nil && s.pollOnce()
}

// admits applies the guard's source check and the checksums the stack
// verifies when the link did not.
func (u *udpNAT) admits(d udpFrame, head []byte, fr link.Frame) bool {
	src := addrOf(d.id.RemoteAddress)
	if src.IsUnspecified() || !policy.IsGuestSource(u.e.plan, u.e.cfg, src) || !isFastDst(addrOf(d.id.LocalAddress)) {
		return false
	}
	if d.netProto == header.IPv6ProtocolNumber && !u.e.cfg.EnableIPv6 {
		return false
	}
	if fr.ChecksumValidated {
		return true
	}
	if d.netProto == header.IPv4ProtocolNumber && !header.IPv4(head[ethLen:ipv4FastLen]).IsChecksumValid() {
		return false
	}
	uh := header.UDP(head[d.udpOff : d.udpOff+header.UDPMinimumSize])
	payload := func() uint16 {
		var c checksum.Checksumer
		forSegRange(fr.Segs, d.udpOff+header.UDPMinimumSize, d.udpOff+d.udpLen, c.Add)
		return c.Checksum()
	}
	_, csumOK := header.UDPValid(uh, payload, uint16(d.udpLen-header.UDPMinimumSize), d.netProto,
		d.id.RemoteAddress, d.id.LocalAddress, false)
	return csumOK
}

// forSegRange calls fn with the pieces of the byte range [from, to) of the
// frame held in segs, in order.
func forSegRange(segs [][]byte, from, to int, fn func([]byte)) {
	off := 0
	for _, s := range segs {
		if off >= to {
			return
		}
		lo, hi := max(from-off, 0), min(to-off, len(s))
		if lo < hi {
			fn(s[lo:hi])
		}
		off += len(s)
	}
}

// segIovecs appends iovecs for the byte range [from, to) of segs to iov;
// it fails if they would need more than cap(iov) iovecs.
func segIovecs(iov []unix.Iovec, segs [][]byte, from, to int) ([]unix.Iovec, bool) {
	ok := true
	forSegRange(segs, from, to, func(b []byte) {
		if len(iov) == cap(iov) {
			ok = false
			return
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	})
	return iov, ok
}

// addrOf converts an IPv4 or IPv6 gVisor address to netip without the
// allocation netipAddr's slice may cost.
func addrOf(a tcpip.Address) netip.Addr {
	if a.Len() == header.IPv4AddressSize {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}

// isFastDst reports whether dst may be a fast-path destination: a unicast
// address (the flow's existence already says the rest).
func isFastDst(dst netip.Addr) bool {
	return !dst.IsMulticast() && dst != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
