package engine

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// bareEngine is an engine on a channel endpoint the test drives by hand.
func bareEngine(t testing.TB, opts ...Option) (*Engine, *channel.Endpoint) {
	t.Helper()
	ep := channel.New(256, 1500, GatewayMAC)
	opts = append([]Option{WithoutServices()}, opts...)
	e, err := New(testConfig(), ep, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, ep
}

func inject(ep *channel.Endpoint, proto tcpip.NetworkProtocolNumber, b []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	ep.InjectInbound(proto, pkt)
	pkt.DecRef()
}

// nextOut returns the next packet the engine sends (its network header
// onwards), or nil after d.
func nextOut(ep *channel.Endpoint, d time.Duration) (tcpip.NetworkProtocolNumber, []byte) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if pkt := ep.Read(); pkt != nil {
			defer pkt.DecRef()
			return pkt.NetworkProtocolNumber, bytes.Clone(pkt.ToView().AsSlice())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, nil
}

func ipv4Packet(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(payload))
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpAddr(src), DstAddr: tcpAddr(dst),
	})
	h.SetChecksum(^h.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], payload)
	return b
}

func ipv6Packet(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, hop uint8, payload []byte) []byte {
	b := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(payload)), TransportProtocol: proto, HopLimit: hop,
		SrcAddr: tcpAddr(src), DstAddr: tcpAddr(dst),
	})
	copy(b[header.IPv6MinimumSize:], payload)
	return b
}

func echo4(ident, seq uint16, data []byte) []byte {
	b := make([]byte, header.ICMPv4MinimumSize+len(data))
	h := header.ICMPv4(b)
	h.SetType(header.ICMPv4Echo)
	h.SetIdent(ident)
	h.SetSequence(seq)
	copy(b[header.ICMPv4MinimumSize:], data)
	h.SetChecksum(^checksum.Checksum(b, 0))
	return b
}

func arpRequest(senderIP, targetIP netip.Addr) []byte {
	b := make([]byte, header.ARPSize)
	h := header.ARP(b)
	h.SetIPv4OverEthernet()
	h.SetOp(header.ARPRequest)
	copy(h.HardwareAddressSender(), guestMAC)
	s4, t4 := senderIP.As4(), targetIP.As4()
	copy(h.ProtocolAddressSender(), s4[:])
	copy(h.ProtocolAddressTarget(), t4[:])
	return b
}

func neighborSolicit(src, dst, target netip.Addr) []byte {
	b := make([]byte, header.ICMPv6NeighborSolicitMinimumSize)
	h := header.ICMPv6(b)
	h.SetType(header.ICMPv6NeighborSolicit)
	header.NDPNeighborSolicit(h.MessageBody()).SetTargetAddress(tcpAddr(target))
	h.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: h, Src: tcpAddr(src), Dst: tcpAddr(dst)}))
	return ipv6Packet(src, dst, header.ICMPv6ProtocolNumber, 255, b)
}

var (
	guest4 = netip.MustParseAddr("10.0.2.100")
	gw4    = netip.MustParseAddr("10.0.2.2")
)

func TestGuardARP(t *testing.T) {
	e, ep := bareEngine(t)
	// A DAD probe (sender 0.0.0.0) for the guest's own address must stay
	// unanswered, or the guest would think its address is taken.
	inject(ep, header.ARPProtocolNumber, arpRequest(netip.IPv4Unspecified(), guest4))
	inject(ep, header.ARPProtocolNumber, arpRequest(guest4, netip.MustParseAddr("10.0.2.77")))
	if proto, b := nextOut(ep, 200*time.Millisecond); b != nil {
		t.Fatalf("engine answered ARP for a foreign address: proto %d % x", proto, b)
	}
	if n := e.Stats().NeighborDropped.Load(); n != 2 {
		t.Fatalf("NeighborDropped = %d, want 2", n)
	}
	inject(ep, header.ARPProtocolNumber, arpRequest(guest4, gw4))
	proto, b := nextOut(ep, time.Second)
	if proto != header.ARPProtocolNumber || b == nil {
		t.Fatalf("no ARP reply for the gateway (proto %d)", proto)
	}
	h := header.ARP(b)
	if h.Op() != header.ARPReply || tcpip.LinkAddress(h.HardwareAddressSender()) != GatewayMAC {
		t.Fatalf("bad ARP reply: op %d sender %x", h.Op(), h.HardwareAddressSender())
	}
}

func TestGuardNeighborSolicit(t *testing.T) {
	e, ep := bareEngine(t)
	guest6 := netip.MustParseAddr("fd00::100")
	solicited := func(a netip.Addr) netip.Addr {
		return netipAddr(header.SolicitedNodeAddr(tcpAddr(a)))
	}
	// DAD for the guest's address, from ::.
	inject(ep, header.IPv6ProtocolNumber, neighborSolicit(netip.IPv6Unspecified(), solicited(guest6), guest6))
	if _, b := nextOut(ep, 200*time.Millisecond); b != nil {
		t.Fatalf("engine answered DAD for the guest's address: % x", b)
	}
	if n := e.Stats().NeighborDropped.Load(); n != 1 {
		t.Fatalf("NeighborDropped = %d, want 1", n)
	}
	gw6 := netip.MustParseAddr("fd00::2")
	ns := neighborSolicit(netip.MustParseAddr("fe80::64"), solicited(gw6), gw6)
	// A solicitation from a unicast source must carry the source link
	// address option; rebuild with it.
	ns = withSourceLinkOption(ns)
	inject(ep, header.IPv6ProtocolNumber, ns)
	proto, b := nextOut(ep, time.Second)
	if proto != header.IPv6ProtocolNumber || b == nil {
		t.Fatal("no neighbor advertisement for fd00::2")
	}
	if typ := header.ICMPv6(b[header.IPv6MinimumSize:]).Type(); typ != header.ICMPv6NeighborAdvert {
		t.Fatalf("got ICMPv6 type %d, want neighbor advertisement", typ)
	}
}

// withSourceLinkOption appends a source link-layer address option to an NS
// packet built by neighborSolicit and fixes lengths and checksum.
func withSourceLinkOption(pkt []byte) []byte {
	ip := header.IPv6(pkt)
	icmp := append(bytes.Clone(pkt[header.IPv6MinimumSize:]), 1, 1)
	icmp = append(icmp, guestMAC...)
	h := header.ICMPv6(icmp)
	h.SetChecksum(0)
	h.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: h, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}))
	return ipv6Packet(netipAddr(ip.SourceAddress()), netipAddr(ip.DestinationAddress()), header.ICMPv6ProtocolNumber, 255, icmp)
}

func TestGuardSpoofedSource(t *testing.T) {
	e, ep := bareEngine(t)
	for _, src := range []string{"192.168.5.5", "10.0.2.2", "127.0.0.1"} {
		inject(ep, header.IPv4ProtocolNumber, ipv4Packet(netip.MustParseAddr(src), gw4, header.ICMPv4ProtocolNumber, echo4(1, 1, nil)))
	}
	inject(ep, header.IPv6ProtocolNumber, ipv6Packet(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fd00::2"), header.UDPProtocolNumber, 64, make([]byte, 8)))
	if _, b := nextOut(ep, 200*time.Millisecond); b != nil {
		t.Fatalf("engine answered a spoofed packet: % x", b)
	}
	if n := e.Stats().SpoofedDropped.Load(); n != 4 {
		t.Fatalf("SpoofedDropped = %d, want 4", n)
	}
}

func TestPingGatewayAnsweredByStack(t *testing.T) {
	_, ep := bareEngine(t)
	inject(ep, header.IPv4ProtocolNumber, ipv4Packet(guest4, gw4, header.ICMPv4ProtocolNumber, echo4(7, 1, []byte("hello"))))
	_, b := nextOut(ep, time.Second)
	if b == nil {
		t.Fatal("no echo reply from the gateway")
	}
	h := header.IPv4(b)
	icmp := header.ICMPv4(h.Payload())
	if netipAddr(h.SourceAddress()) != gw4 || icmp.Type() != header.ICMPv4EchoReply || icmp.Ident() != 7 {
		t.Fatalf("bad reply from %s type %d ident %d", netipAddr(h.SourceAddress()), icmp.Type(), icmp.Ident())
	}
}

// fakePingHost stands in for the host's ICMP sockets: it answers each echo
// request with a reply carrying another identifier (as the kernel does).
func fakePingHost(t *testing.T) (Option, <-chan netip.Addr) {
	dsts := make(chan netip.Addr, 16)
	open := func(dst, _ netip.Addr) (net.Conn, error) {
		if dst == netip.MustParseAddr("198.51.100.9") {
			return nil, errors.New("EACCES")
		}
		dsts <- dst
		ours, theirs := net.Pipe()
		go func() {
			defer theirs.Close()
			buf := make([]byte, 2000)
			for {
				n, err := theirs.Read(buf)
				if err != nil {
					return
				}
				reply := bytes.Clone(buf[:n])
				reply[0] = byte(header.ICMPv4EchoReply)
				if dst.Is6() {
					reply[0] = byte(header.ICMPv6EchoReply)
				}
				header.ICMPv4(reply).SetIdent(0xbeef)
				if _, err := theirs.Write(reply); err != nil {
					return
				}
			}
		}()
		return ours, nil
	}
	return func(o *options) { o.openPing = open }, dsts
}

func TestPingRelay(t *testing.T) {
	noLeaks(t)
	opt, dsts := fakePingHost(t)
	e, ep := bareEngine(t, opt, WithPingIdleTimeout(200*time.Millisecond))
	foreign := netip.MustParseAddr("192.0.2.1")
	inject(ep, header.IPv4ProtocolNumber, ipv4Packet(guest4, foreign, header.ICMPv4ProtocolNumber, echo4(42, 3, []byte("payload"))))
	if d := <-dsts; d != foreign {
		t.Fatalf("host socket opened to %s", d)
	}
	_, b := nextOut(ep, time.Second)
	if b == nil {
		t.Fatal("no echo reply")
	}
	h := header.IPv4(b)
	icmp := header.ICMPv4(h.Payload())
	switch {
	case netipAddr(h.SourceAddress()) != foreign, netipAddr(h.DestinationAddress()) != guest4:
		t.Fatalf("reply %s -> %s", netipAddr(h.SourceAddress()), netipAddr(h.DestinationAddress()))
	case icmp.Type() != header.ICMPv4EchoReply, icmp.Ident() != 42, icmp.Sequence() != 3:
		t.Fatalf("reply type %d ident %d seq %d", icmp.Type(), icmp.Ident(), icmp.Sequence())
	case string(icmp.Payload()) != "payload":
		t.Fatalf("reply payload %q", icmp.Payload())
	case checksum.Checksum(icmp, 0) != 0xffff:
		t.Fatal("bad ICMP checksum")
	}
	// Not relayed: the guest network, and a host that refuses sockets.
	inject(ep, header.IPv4ProtocolNumber, ipv4Packet(guest4, netip.MustParseAddr("10.0.2.50"), header.ICMPv4ProtocolNumber, echo4(1, 1, nil)))
	inject(ep, header.IPv4ProtocolNumber, ipv4Packet(guest4, netip.MustParseAddr("198.51.100.9"), header.ICMPv4ProtocolNumber, echo4(1, 1, nil)))
	if _, b := nextOut(ep, 200*time.Millisecond); b != nil {
		t.Fatalf("unexpected reply % x", b)
	}
	if r, d := e.Stats().PingsRelayed.Load(), e.Stats().PingsDropped.Load(); r != 1 || d != 2 {
		t.Fatalf("relayed %d dropped %d, want 1 and 2", r, d)
	}
	// IPv6.
	foreign6 := netip.MustParseAddr("2001:db8::9")
	req := make([]byte, header.ICMPv6EchoMinimumSize+4)
	h6 := header.ICMPv6(req)
	h6.SetType(header.ICMPv6EchoRequest)
	h6.SetIdent(9)
	h6.SetSequence(2)
	h6.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: h6, Src: tcpAddr(netip.MustParseAddr("fd00::100")), Dst: tcpAddr(foreign6)}))
	inject(ep, header.IPv6ProtocolNumber, ipv6Packet(netip.MustParseAddr("fd00::100"), foreign6, header.ICMPv6ProtocolNumber, 64, req))
	<-dsts
	_, b = nextOut(ep, time.Second)
	if b == nil {
		t.Fatal("no IPv6 echo reply")
	}
	ip6 := header.IPv6(b)
	r6 := header.ICMPv6(ip6.Payload())
	if netipAddr(ip6.SourceAddress()) != foreign6 || r6.Type() != header.ICMPv6EchoReply || r6.Ident() != 9 {
		t.Fatalf("IPv6 reply from %s type %d ident %d", netipAddr(ip6.SourceAddress()), r6.Type(), r6.Ident())
	}
	if cs := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: r6, Src: ip6.SourceAddress(), Dst: ip6.DestinationAddress()}); cs != r6.Checksum() {
		t.Fatalf("IPv6 reply checksum %#x, want %#x", r6.Checksum(), cs)
	}
	eventually(t, 3*time.Second, "ping sessions to expire", func() bool {
		e.ping.mu.Lock()
		defer e.ping.mu.Unlock()
		return len(e.ping.flows) == 0
	})
}

// FuzzGuard feeds arbitrary packets to the guard: it must never panic, and
// no echo request may reach a real host socket.
func FuzzGuard(f *testing.F) {
	f.Add(uint8(0), ipv4Packet(guest4, gw4, header.ICMPv4ProtocolNumber, echo4(1, 1, []byte("x"))))
	f.Add(uint8(0), ipv4Packet(guest4, netip.MustParseAddr("192.0.2.1"), header.ICMPv4ProtocolNumber, echo4(1, 1, nil)))
	f.Add(uint8(1), neighborSolicit(netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:100"), netip.MustParseAddr("fd00::100")))
	f.Add(uint8(2), arpRequest(guest4, gw4))
	f.Add(uint8(0), []byte{0x45})
	f.Add(uint8(1), []byte{0x60, 0, 0, 0, 0, 8, 58, 64})
	open := func(netip.Addr, netip.Addr) (net.Conn, error) { return nil, errors.New("no host sockets in fuzzing") }
	e, _ := bareEngine(f, func(o *options) { o.openPing = open })
	g := newGuard(channel.New(1, 1500, GatewayMAC), e)
	protos := []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber, header.ARPProtocolNumber}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		defer pkt.DecRef()
		g.admit(protos[int(which)%len(protos)], pkt)
	})
}
