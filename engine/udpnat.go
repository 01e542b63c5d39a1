package engine

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// maxDatagram is the largest UDP payload relayed (the IPv4 maximum).
const maxDatagram = 65535

// dnsPort gets the shorter idle timeout: a DNS exchange is one round trip.
const dnsPort = 53

// udpMaxIovecs bounds the views of one guest datagram written in a single
// sendmsg; a datagram in more pieces (a reassembled one) is copied first.
const udpMaxIovecs = 16

// recvBufs holds the buffers host datagrams are read into. A flow takes one
// only while its socket is readable, so idle flows hold no buffer.
var recvBufs = sync.Pool{New: func() any {
	b := make([]byte, maxDatagram)
	return &b
}}

// udpNAT turns each guest UDP flow (guest addr:port → dst:port) into a
// connected host UDP socket, until the flow has been idle for a while.
//
// Guest datagrams are not queued anywhere: the stack hands every UDP packet
// that no gVisor endpoint claims (DNS and DHCP have their own) to
// handlePacket on the link's reader goroutine, which writes it to the
// flow's host socket at once, as the C slirp4netns does. An earlier design
// queued them on a gVisor UDP endpoint per flow, read by a copy goroutine:
// under load that goroutine was off a CPU long enough for the endpoint to
// overflow (netbench lost 0.6-4.4 % at 500 Mbit/s where C lost 0.2 %), and
// each flow held two 64 KiB buffers and two goroutines. Now a flow is a
// host socket, a route back to the guest and one goroutine parked in the
// poller for the host's answers, which are written to the guest as packets
// built here.
//
// Once a flow exists, its datagrams take the fast path (udpfast.go): the
// link hands the frame to the guard's TakeFrame before gVisor sees it, and
// the datagram is copied into a small batch that goes to the host socket
// in one sendmmsg when the link has no more frames waiting or the batch is
// full (udpbatch.go).
type udpNAT struct {
	e *Engine

	mu     sync.Mutex
	closed bool
	flows  map[stack.TransportEndpointID]*udpFlow

	// Counters for tests: datagrams written to host sockets, and those
	// dropped because a host socket refused them for want of room.
	forwarded, dropped atomic.Uint64

	batch udpBatch // the fast path's datagrams not sent yet
}

// udpFlow is one guest UDP flow and its host socket.
type udpFlow struct {
	id    stack.TransportEndpointID // local: the destination the guest used
	host  *net.UDPConn
	rc    syscall.RawConn
	route *stack.Route // from id.LocalAddress to the guest
	idle  time.Duration
	last  atomicTime
	once  sync.Once
}

func newUDPNAT(e *Engine) *udpNAT {
	u := &udpNAT{e: e, flows: make(map[stack.TransportEndpointID]*udpFlow)}
	e.stack.SetTransportProtocolHandler(udp.ProtocolNumber, u.handlePacket)
	return u
}

// handlePacket is the stack's handler for guest UDP packets that no
// endpoint claimed; it runs inline in the packet path. Returning false
// makes the stack answer with ICMP port unreachable, which is what a
// refused destination deserves.
func (u *udpNAT) handlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if !validUDP(pkt) {
		u.e.stack.Stats().UDP.MalformedPacketsReceived.Increment()
		return true
	}
	u.e.stack.Stats().UDP.PacketsReceived.Increment()
	f := u.lookup(id)
	if f == nil {
		var refused bool
		if f, refused = u.open(id, pkt.NetworkProtocolNumber); refused {
			return false
		}
		if f == nil {
			return true // table full or shutting down: dropped
		}
	}
	u.forward(f, pkt)
	return true
}

// validUDP checks the UDP length and, unless the link vouched for it, the
// checksum (the stack has parsed the header and trimmed the payload).
func validUDP(pkt *stack.PacketBuffer) bool {
	hdr := header.UDP(pkt.TransportHeader().Slice())
	if len(hdr) < header.UDPMinimumSize || pkt.Data().Size() > math.MaxUint16-header.UDPMinimumSize {
		return false
	}
	nh := pkt.Network()
	lengthOK, csumOK := header.UDPValid(hdr, func() uint16 { return pkt.Data().Checksum() },
		uint16(pkt.Data().Size()), pkt.NetworkProtocolNumber,
		nh.SourceAddress(), nh.DestinationAddress(), pkt.RXChecksumValidated)
	return lengthOK && csumOK
}

func (u *udpNAT) lookup(id stack.TransportEndpointID) *udpFlow {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.flows[id]
}

// open starts a flow for the first datagram of id. It returns refused when
// the destination is not allowed or cannot be reached (the guest gets port
// unreachable), and a nil flow without refused when the datagram is to be
// dropped silently.
func (u *udpNAT) open(id stack.TransportEndpointID, netProto tcpip.NetworkProtocolNumber) (f *udpFlow, refused bool) {
	target, err := policy.OutboundTarget(u.e.plan, u.e.cfg, netipAddr(id.LocalAddress))
	if err != nil {
		return nil, true
	}
	u.mu.Lock()
	full := len(u.flows) >= u.e.opts.maxUDPFlows
	closed := u.closed
	u.mu.Unlock()
	if closed {
		return nil, false
	}
	if full {
		u.e.stats.UDPFlowsDropped.Add(1)
		return nil, false
	}
	host, err := u.dial(target, id.LocalPort)
	if err != nil {
		return nil, true // e.g. no route
	}
	rc, err := host.SyscallConn()
	if err != nil {
		host.Close()
		return nil, false
	}
	route, terr := u.e.stack.FindRoute(nicID, id.LocalAddress, id.RemoteAddress, netProto, false)
	if terr != nil {
		host.Close()
		return nil, false
	}
	f = &udpFlow{id: id, host: host, rc: rc, route: route, idle: u.e.opts.udpIdle}
	if id.LocalPort == dnsPort || id.RemotePort == dnsPort {
		f.idle = u.e.opts.dnsIdle
	}
	f.last.touch()
	if !u.add(f) {
		f.close()
		route.Release()
		return nil, false
	}
	u.e.goFunc(func() { u.hostToGuest(f) })
	return f, false
}

// dial opens the connected host socket of a flow.
func (u *udpNAT) dial(target netip.Addr, port uint16) (*net.UDPConn, error) {
	var laddr *net.UDPAddr
	if la := u.e.outboundFor(target); la.IsValid() {
		laddr = &net.UDPAddr{IP: la.AsSlice()}
	}
	return net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(target, port)))
}

func (u *udpNAT) add(f *udpFlow) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	if _, dup := u.flows[f.id]; dup {
		return false // a concurrent first datagram won: drop this one
	}
	u.flows[f.id] = f
	return true
}

// end closes a flow and forgets it; the next datagram starts a new one.
func (u *udpNAT) end(f *udpFlow) {
	u.mu.Lock()
	if u.flows[f.id] == f {
		delete(u.flows, f.id)
	}
	u.mu.Unlock()
	f.close()
}

func (u *udpNAT) closeAll() {
	u.mu.Lock()
	u.closed = true
	flows := u.flows
	u.flows = map[stack.TransportEndpointID]*udpFlow{}
	u.mu.Unlock()
	for _, f := range flows {
		f.close()
	}
}

// count is the number of live flows (for tests).
func (u *udpNAT) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

// close closes the flow's host socket, which ends its hostToGuest; that
// goroutine, the route's only user, releases the route.
func (f *udpFlow) close() {
	f.once.Do(func() { f.host.Close() })
}

// forward writes the guest datagram in pkt to the flow's host socket, in
// one non-blocking sendmsg from the packet's own buffers. A full socket
// drops it (UDP may lose datagrams; blocking would stall the guest link).
func (u *udpNAT) forward(f *udpFlow, pkt *stack.PacketBuffer) {
	f.last.touch()
	data := pkt.Data().ToBuffer()
	defer data.Release()
	var iovs [udpMaxIovecs]unix.Iovec
	iov := iovs[:0]
	data.SubApply(0, int(data.Size()), func(v *buffer.View) {
		if b := v.AsSlice(); len(b) > 0 && len(iov) < cap(iov) {
			iov = append(iov, unix.Iovec{Base: &b[0]})
			iov[len(iov)-1].SetLen(len(b))
		}
	})
	var flat []byte
	if sum := iovLen(iov); sum != int(data.Size()) {
		flat = data.Flatten()
		iov = append(iov[:0], unix.Iovec{Base: &flat[0]})
		iov[0].SetLen(len(flat))
	}
	u.send(f, iov)
}

// send writes the datagram in iov to the flow's host socket with one
// non-blocking sendmsg, and ends the flow if the socket failed.
func (u *udpNAT) send(f *udpFlow, iov []unix.Iovec) {
	var errno syscall.Errno
	err := f.rc.Control(func(fd uintptr) { errno = sendmsg(fd, iov) })
	switch {
	case err != nil:
		u.end(f) // closed under us
	case errno == 0:
		u.forwarded.Add(1)
	default:
		u.sendFailed(f, errno, 1)
	}
}

// sendFailed handles errno from a send of n datagrams of f: a full socket
// drops them (UDP may lose datagrams; blocking would stall the guest
// link), and any other error ends the flow, a port unreachable the host
// reported for an earlier datagram after telling the guest.
func (u *udpNAT) sendFailed(f *udpFlow, errno syscall.Errno, n int) {
	switch errno {
	case unix.EAGAIN, unix.ENOBUFS:
		u.dropped.Add(uint64(n))
	case unix.ECONNREFUSED:
		u.e.ping.portUnreachable(f.id)
		u.end(f)
	default:
		u.end(f)
	}
}

func iovLen(iov []unix.Iovec) int {
	n := 0
	for _, v := range iov {
		n += int(v.Len)
	}
	return n
}

// sendmsg sends one datagram from iov on the non-blocking socket fd. A
// RawSyscall: it never blocks (see link's rxState.readv for why that
// matters), and on loopback the receiver's side runs inside it, as it
// would in the C slirp4netns's single thread.
func sendmsg(fd uintptr, iov []unix.Iovec) syscall.Errno {
	var msg unix.Msghdr
	if len(iov) > 0 {
		msg.Iov = &iov[0]
		msg.SetIovlen(len(iov))
	}
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errno != unix.EINTR {
			return errno
		}
	}
}

// hostToGuest relays the host's answers until the flow is idle for its
// timeout (checked here: this side always has a read pending), then ends
// the flow.
func (u *udpNAT) hostToGuest(f *udpFlow) {
	defer f.route.Release()
	defer u.end(f)
	for {
		f.host.SetReadDeadline(f.last.get().Add(f.idle))
		var errno syscall.Errno
		err := f.rc.Read(func(fd uintptr) bool {
			bp := recvBufs.Get().(*[]byte)
			defer recvBufs.Put(bp)
			n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&(*bp)[0])), uintptr(len(*bp)), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN {
				return false
			}
			if e == 0 {
				f.last.touch()
				u.toGuest(f, (*bp)[:n])
			}
			errno = e
			return true
		})
		switch {
		case err != nil:
			if isTimeout(err) && !f.last.idleFor(f.idle) {
				continue
			}
			return
		case errno == unix.EINTR:
			continue
		case errno == unix.ECONNREFUSED:
			u.e.ping.portUnreachable(f.id)
			return
		case errno != 0:
			return
		}
	}
}

// toGuest sends payload to the guest as a UDP datagram from the flow's
// destination, through the stack's IP layer (which fragments it if it
// exceeds the MTU).
func (u *udpNAT) toGuest(f *udpFlow, payload []byte) {
	r := f.route
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.UDPMinimumSize + int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(payload),
	})
	defer pkt.DecRef()
	h := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	length := uint16(pkt.Size())
	h.Encode(&header.UDPFields{SrcPort: f.id.LocalPort, DstPort: f.id.RemotePort, Length: length})
	if r.RequiresTXTransportChecksum() {
		xsum := h.CalculateChecksum(checksum.Combine(
			header.PseudoHeaderChecksum(header.UDPProtocolNumber, r.LocalAddress(), r.RemoteAddress(), length),
			pkt.Data().Checksum()))
		// A computed zero is sent as all ones (RFC 768).
		if xsum != math.MaxUint16 {
			xsum = ^xsum
		}
		h.SetChecksum(xsum)
	}
	if err := r.WritePacket(stack.NetworkHeaderParams{Protocol: header.UDPProtocolNumber, TTL: r.DefaultTTL()}, pkt); err != nil {
		u.e.stack.Stats().UDP.PacketSendErrors.Increment()
		return
	}
	u.e.stack.Stats().UDP.PacketsSent.Increment()
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// atomicTime is a time readable and writable from several goroutines
// (nanoseconds since the Unix epoch).
type atomicTime struct{ ns atomic.Int64 }

func (a *atomicTime) touch()         { a.ns.Store(time.Now().UnixNano()) }
func (a *atomicTime) get() time.Time { return time.Unix(0, a.ns.Load()) }

func (a *atomicTime) idleFor(d time.Duration) bool { return time.Since(a.get()) >= d }
