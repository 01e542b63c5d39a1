package engine

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// pinger relays the guest's ICMP echo requests to foreign addresses through
// unprivileged host ICMP sockets (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP),
// allowed by net.ipv4.ping_group_range) and injects the replies back into the
// stack as if they came from the pinged address. Without the sysctl the
// requests are dropped, as with the C slirp4netns.
type pinger struct {
	e *Engine

	mu     sync.Mutex
	closed bool
	flows  map[pingKey]*pingFlow

	warned atomic.Bool // logged once that ICMP sockets are not allowed
}

// pingKey identifies one guest ping session: the kernel gives each host
// socket its own echo identifier, so replies are mapped back by socket.
type pingKey struct {
	guest, dst netip.Addr
	ident      uint16
}

type pingFlow struct {
	key  pingKey
	conn net.Conn
	last atomicTime
	once sync.Once
}

func newPinger(e *Engine) *pinger {
	return &pinger{e: e, flows: make(map[pingKey]*pingFlow)}
}

// relay sends the echo request msg (ICMPv4 or ICMPv6 header and payload,
// owned by the caller) from guest to dst.
func (p *pinger) relay(guest, dst netip.Addr, msg []byte) {
	target, err := policy.OutboundTarget(p.e.plan, p.e.cfg, dst)
	if err != nil || target != dst || len(msg) < header.ICMPv4MinimumSize {
		p.e.stats.PingsDropped.Add(1)
		return
	}
	key := pingKey{guest: guest, dst: dst, ident: header.ICMPv4(msg).Ident()}
	f, err := p.flow(key)
	if err != nil {
		p.e.stats.PingsDropped.Add(1)
		if !p.warned.Swap(true) {
			p.e.logf("ping %s: %v (check net.ipv4.ping_group_range)", dst, err)
		}
		return
	}
	f.last.touch()
	// Counted before the write: the answer may reach the guest before
	// this goroutine runs again. The kernel sets the identifier and the
	// checksum.
	p.e.stats.PingsRelayed.Add(1)
	if _, err := f.conn.Write(msg); err != nil {
		p.e.stats.PingsRelayed.Add(^uint64(0))
		p.e.stats.PingsDropped.Add(1)
	}
}

// flow returns the session for key, opening its host socket if needed.
func (p *pinger) flow(key pingKey) (*pingFlow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errClosed
	}
	if f := p.flows[key]; f != nil {
		return f, nil
	}
	if len(p.flows) >= p.e.opts.maxPingFlows {
		return nil, fmt.Errorf("too many ping sessions")
	}
	conn, err := p.e.opts.openPing(key.dst, p.e.outboundFor(key.dst))
	if err != nil {
		return nil, err
	}
	f := &pingFlow{key: key, conn: conn}
	f.last.touch()
	p.flows[key] = f
	p.e.goFunc(func() { p.readReplies(f) })
	return f, nil
}

// readReplies injects the echo replies of one session until it is idle.
func (p *pinger) readReplies(f *pingFlow) {
	defer p.end(f)
	buf := make([]byte, maxDatagram)
	idle := p.e.opts.pingIdle
	for {
		f.conn.SetReadDeadline(f.last.get().Add(idle))
		n, err := f.conn.Read(buf)
		if err != nil {
			if isTimeout(err) && !f.last.idleFor(idle) {
				continue
			}
			return
		}
		if n < header.ICMPv4MinimumSize {
			continue
		}
		msg := header.ICMPv4(buf[:n])
		reply := header.ICMPv4EchoReply
		if f.key.dst.Is6() {
			reply = header.ICMPv4Type(header.ICMPv6EchoReply)
		}
		if msg.Type() != reply {
			continue
		}
		f.last.touch()
		msg.SetIdent(f.key.ident)
		p.e.injectICMP(f.key.dst, f.key.guest, msg)
	}
}

func (p *pinger) end(f *pingFlow) {
	p.mu.Lock()
	if p.flows[f.key] == f {
		delete(p.flows, f.key)
	}
	p.mu.Unlock()
	f.once.Do(func() { f.conn.Close() })
}

func (p *pinger) closeAll() {
	p.mu.Lock()
	p.closed = true
	flows := p.flows
	p.flows = map[pingKey]*pingFlow{}
	p.mu.Unlock()
	for _, f := range flows {
		f.once.Do(func() { f.conn.Close() })
	}
}

// portUnreachable tells the guest that the host refused the UDP flow id
// (ICMP port unreachable quoting a reconstruction of the guest's datagram
// header, which is all the guest's kernel matches on).
func (p *pinger) portUnreachable(id stack.TransportEndpointID) {
	guest, remote := netipAddr(id.RemoteAddress), netipAddr(id.LocalAddress)
	udp := make([]byte, header.UDPMinimumSize)
	header.UDP(udp).Encode(&header.UDPFields{SrcPort: id.RemotePort, DstPort: id.LocalPort, Length: header.UDPMinimumSize})
	var msg []byte
	if guest.Is4() {
		ip := make([]byte, header.IPv4MinimumSize)
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{
			TotalLength: header.IPv4MinimumSize + header.UDPMinimumSize,
			TTL:         64,
			Protocol:    uint8(header.UDPProtocolNumber),
			SrcAddr:     id.RemoteAddress,
			DstAddr:     id.LocalAddress,
		})
		h.SetChecksum(^h.CalculateChecksum())
		msg = make([]byte, header.ICMPv4MinimumSize, header.ICMPv4MinimumSize+len(ip)+len(udp))
		header.ICMPv4(msg).SetType(header.ICMPv4DstUnreachable)
		header.ICMPv4(msg).SetCode(header.ICMPv4PortUnreachable)
		msg = append(append(msg, ip...), udp...)
	} else {
		ip := make([]byte, header.IPv6MinimumSize)
		header.IPv6(ip).Encode(&header.IPv6Fields{
			PayloadLength:     header.UDPMinimumSize,
			TransportProtocol: header.UDPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           id.RemoteAddress,
			DstAddr:           id.LocalAddress,
		})
		msg = make([]byte, header.ICMPv6DstUnreachableMinimumSize, header.ICMPv6DstUnreachableMinimumSize+len(ip)+len(udp))
		header.ICMPv6(msg).SetType(header.ICMPv6DstUnreachable)
		header.ICMPv6(msg).SetCode(header.ICMPv6PortUnreachable)
		msg = append(append(msg, ip...), udp...)
	}
	p.e.injectICMP(remote, guest, msg)
}

// injectICMP sends the ICMP message msg (header and payload; its checksum is
// computed here) to the guest address to, as if it came from from.
func (e *Engine) injectICMP(from, to netip.Addr, msg []byte) {
	netProto := protoOf(to)
	r, err := e.stack.FindRoute(nicID, tcpAddr(from), tcpAddr(to), netProto, false)
	if err != nil {
		return
	}
	defer r.Release()
	var transProto tcpip.TransportProtocolNumber
	if to.Is4() {
		transProto = header.ICMPv4ProtocolNumber
		h := header.ICMPv4(msg)
		h.SetChecksum(0)
		h.SetChecksum(^checksum.Checksum(msg, 0))
	} else {
		transProto = header.ICMPv6ProtocolNumber
		h := header.ICMPv6(msg)
		h.SetChecksum(0)
		h.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: h, Src: r.LocalAddress(), Dst: r.RemoteAddress()}))
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(append([]byte(nil), msg...)),
	})
	defer pkt.DecRef()
	_ = r.WritePacket(stack.NetworkHeaderParams{Protocol: transProto, TTL: r.DefaultTTL()}, pkt)
}

// openPingSocket opens an unprivileged ICMP socket connected to dst, bound
// to laddr if valid.
func openPingSocket(dst, laddr netip.Addr) (net.Conn, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if dst.Is6() {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("ICMP socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ping")
	defer f.Close()
	if laddr.IsValid() {
		if err := unix.Bind(fd, sockaddr(laddr)); err != nil {
			return nil, fmt.Errorf("bind ICMP socket to %s: %w", laddr, err)
		}
	}
	if err := unix.Connect(fd, sockaddr(dst)); err != nil {
		return nil, fmt.Errorf("connect ICMP socket to %s: %w", dst, err)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("ICMP socket: %w", err)
	}
	return c, nil
}

func sockaddr(a netip.Addr) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}
