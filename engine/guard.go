package engine

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// guard sits between the link endpoint and the stack and looks at every
// packet from the guest before gVisor does. It exists because a promiscuous,
// spoofing NIC answers too much by itself:
//   - ICMP echo requests to any address (the guest would see every host
//     "up"): those to addresses that are not ours are relayed to the host's
//     ICMP sockets instead;
//   - ARP requests and IPv6 neighbor solicitations for any address (the
//     guest's duplicate address detection would fail): only those for our
//     own addresses reach the stack;
//
// and it drops packets with a source outside the guest network, which no
// well-behaved guest sends and which would otherwise be NATed.
type guard struct {
	nested.Endpoint
	e *Engine
	// ll6 is our IPv6 link-local address (derived from the MAC).
	ll6 netip.Addr
}

func newGuard(child stack.LinkEndpoint, e *Engine) *guard {
	g := &guard{e: e}
	g.ll6 = netipAddr(header.LinkLocalAddr(child.LinkAddress()))
	g.Endpoint.Init(child, g)
	return g
}

// DeliverNetworkPacket implements stack.NetworkDispatcher for the child link
// endpoint.
func (g *guard) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if g.admit(proto, pkt) {
		g.Endpoint.DeliverNetworkPacket(proto, pkt)
	}
}

// admit says whether pkt goes on to the stack.
func (g *guard) admit(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) bool {
	switch proto {
	case header.ARPProtocolNumber:
		return g.admitARP(pkt)
	case header.IPv4ProtocolNumber:
		return g.admitIPv4(pkt)
	case header.IPv6ProtocolNumber:
		return g.admitIPv6(pkt)
	}
	return true
}

// isOurs reports whether a is one of the engine's own unicast addresses.
func (g *guard) isOurs(a netip.Addr) bool {
	p := &g.e.plan
	return a == p.Gateway || a == p.DNS || (g.e.cfg.EnableIPv6 && (a == p.Gateway6 || a == p.DNS6 || a == g.ll6))
}

// fromGuest reports whether src is an address the guest may send from
// (policy.IsGuestSource); a packet from any other is dropped and counted.
func (g *guard) fromGuest(src netip.Addr) bool {
	if policy.IsGuestSource(g.e.plan, g.e.cfg, src) {
		return true
	}
	g.e.stats.SpoofedDropped.Add(1)
	return false
}

func (g *guard) admitARP(pkt *stack.PacketBuffer) bool {
	b, ok := pkt.Data().PullUp(header.ARPSize)
	if !ok {
		return true // let the stack count the malformed packet
	}
	h := header.ARP(b)
	if !h.IsValid() || h.Op() != header.ARPRequest {
		return true
	}
	target, _ := netip.AddrFromSlice(h.ProtocolAddressTarget())
	if !g.isOurs(target) {
		g.e.stats.NeighborDropped.Add(1)
		return false
	}
	return true
}

func (g *guard) admitIPv4(pkt *stack.PacketBuffer) bool {
	b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
	if !ok {
		return true
	}
	h := header.IPv4(b)
	src := netip.AddrFrom4([4]byte(h[12:16]))
	if !g.fromGuest(src) {
		return false
	}
	// 0.0.0.0 is a valid source only for a DHCP client that has no
	// address yet; anything else from it would be NATed to the host.
	if src.IsUnspecified() && !isDHCPRequest(pkt, h) {
		g.e.stats.SpoofedDropped.Add(1)
		return false
	}
	if h.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
		return true
	}
	dst := netip.AddrFrom4([4]byte(h[16:20]))
	if g.isOurs(dst) || !dst.IsGlobalUnicast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return true // the stack answers (or ignores) it
	}
	hl := int(h.HeaderLength())
	full, ok := pkt.Data().PullUp(pkt.Data().Size())
	if !ok || hl < header.IPv4MinimumSize || len(full) < hl+header.ICMPv4MinimumSize {
		return true
	}
	h = header.IPv4(full)
	if h.More() || h.FragmentOffset() != 0 {
		g.e.stats.PingsDropped.Add(1)
		return false // a fragmented echo to a foreign address: not relayed
	}
	end := min(int(h.TotalLength()), len(full))
	if end < hl+header.ICMPv4MinimumSize {
		return true
	}
	icmp := header.ICMPv4(full[hl:end])
	if icmp.Type() != header.ICMPv4Echo {
		return true
	}
	g.e.ping.relay(src, dst, icmp)
	return false
}

// isDHCPRequest reports whether the IPv4 packet h (at the front of pkt)
// is UDP to the DHCP server port.
func isDHCPRequest(pkt *stack.PacketBuffer, h header.IPv4) bool {
	hl := int(h.HeaderLength())
	if h.Protocol() != uint8(header.UDPProtocolNumber) || hl < header.IPv4MinimumSize || h.FragmentOffset() != 0 {
		return false
	}
	b, ok := pkt.Data().PullUp(hl + header.UDPMinimumSize)
	return ok && header.UDP(b[hl:]).DestinationPort() == 67
}

func (g *guard) admitIPv6(pkt *stack.PacketBuffer) bool {
	if !g.e.cfg.EnableIPv6 {
		return false // without -6 the guest link has no IPv6 router
	}
	b, ok := pkt.Data().PullUp(header.IPv6MinimumSize)
	if !ok {
		return true
	}
	h := header.IPv6(b)
	src := netip.AddrFrom16([16]byte(h[8:24]))
	if !g.fromGuest(src) {
		return false
	}
	if h.NextHeader() != uint8(header.ICMPv6ProtocolNumber) {
		return true
	}
	end := header.IPv6MinimumSize + int(h.PayloadLength())
	full, ok := pkt.Data().PullUp(min(end, pkt.Data().Size()))
	if !ok || len(full) < header.IPv6MinimumSize+header.ICMPv6MinimumSize {
		return true
	}
	icmp := header.ICMPv6(full[header.IPv6MinimumSize:])
	dst := netip.AddrFrom16([16]byte(h[24:40]))
	switch icmp.Type() {
	case header.ICMPv6NeighborSolicit:
		if len(icmp) < header.ICMPv6NeighborSolicitMinimumSize {
			return true
		}
		target := netip.AddrFrom16([16]byte(header.NDPNeighborSolicit(icmp[header.ICMPv6HeaderSize:]).TargetAddress().As16()))
		if !g.isOurs(target) {
			g.e.stats.NeighborDropped.Add(1)
			return false
		}
	case header.ICMPv6EchoRequest:
		if g.isOurs(dst) || !dst.IsGlobalUnicast() {
			return true
		}
		g.e.ping.relay(src, dst, icmp)
		return false
	}
	return true
}
