package engine

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// TCP buffer sizes. The maximum bounds what receive-buffer moderation may
// grow one connection's window to, and with it the engine's memory under a
// bulk transfer. Measured with iperf3 through a TAP (netbench-like, 3 s,
// both directions and MTUs): a 2 MiB maximum moved as much as 8 MiB did
// (5-7.5 Gbit/s on the loaded 2-core machine, within noise) while the
// engine's peak RSS fell from ~27 to ~18 MiB. 1 MiB (session 3, interleaved
// netab runs): guest->host 13.0-14.7 vs 11.6-13.5 Gbit/s, host->guest
// 12.5-13.8 vs 11.7-14.1, the process tree's peak RSS under host->guest
// 21.7-22.0 vs 22.6-23.0 MiB (the peak of netbench's run, against a 24 MiB
// bar). A window of 1 MiB is still several times the bandwidth-delay
// product of a TAP and the host's loopback (~150 KB at 12 Gbit/s and
// 100 us). Buffers grow only when used, so idle connections stay small.
const (
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 1 << 20
)

// congestionControl is the TCP congestion control of the stack: gVisor's
// default, cubic, kept on measurement. On a real TAP (BenchmarkTAPIperf3,
// host->guest, where the engine is the sender) the two are within noise:
// 0.8-0.95 vs 0.8 Gbit/s plain at MTU 1500, 6.4-7.2 vs 7.1-7.3 with the
// virtio-net header, 6.2-6.5 vs 6.1-8.1 at 65520. On a link that drops when
// its queue is full (BenchmarkTCPThroughEngine, as a TAP drops when its
// reader falls behind), reno collapsed to 3-25 MB/s at MTU 1500 where cubic
// kept ~90 MB/s. Tailscale forces reno in its netstack; revisit if cubic
// misbehaves here (both benchmarks cover both).
const congestionControl = "cubic"

// newStack makes the stack with every protocol the guest may speak.
func newStack() *stack.Stack {
	return stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			arp.NewProtocol,
			// Zero options: no DAD for our own addresses (they are ours by
			// definition and must answer at once), no router solicitations
			// and no SLAAC (the engine is the router, not a host).
			ipv6.NewProtocolWithOptions(ipv6.Options{}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol,
			udp.NewProtocol,
			icmp.NewProtocol4,
			icmp.NewProtocol6,
		},
	})
}

// configureNIC tunes the stack, attaches ep as the guest's NIC and gives it
// the engine's addresses and default routes.
func configureNIC(s *stack.Stack, cfg policy.Config, plan policy.Plan, congestion string, ep stack.LinkEndpoint) error {
	if err := tuneTCP(s, congestion); err != nil {
		return err
	}
	if err := s.CreateNIC(nicID, ep); err != nil {
		return fmt.Errorf("create NIC: %s", err)
	}
	// Promiscuous: accept packets to every destination (the NAT answers as
	// that destination). Spoofing: let endpoints use any local address, so
	// replies come from the address the guest talked to.
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("set promiscuous mode: %s", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("set spoofing: %s", err)
	}
	for _, a := range nicAddresses(cfg, plan, ep.LinkAddress()) {
		pa := tcpip.ProtocolAddress{
			Protocol:          protoOf(a.Addr()),
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpAddr(a.Addr()), PrefixLen: a.Bits()},
		}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("add address %s: %s", a, err)
		}
	}
	routes := []tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}}
	if cfg.EnableIPv6 {
		routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	s.SetRouteTable(routes)
	return nil
}

// nicAddresses are the addresses the engine owns on the guest link: the
// gateway and the DNS address, and with IPv6 fd00::2, fd00::3 and a
// link-local address derived from the MAC (router advertisements must come
// from a link-local address).
func nicAddresses(cfg policy.Config, plan policy.Plan, mac tcpip.LinkAddress) []netip.Prefix {
	bits := plan.Network.Bits()
	out := []netip.Prefix{
		netip.PrefixFrom(plan.Gateway, bits),
		netip.PrefixFrom(plan.DNS, bits),
	}
	if cfg.EnableIPv6 {
		ll := netipAddr(header.LinkLocalAddr(mac))
		out = append(out,
			netip.PrefixFrom(plan.Gateway6, plan.Network6.Bits()),
			netip.PrefixFrom(plan.DNS6, plan.Network6.Bits()),
			netip.PrefixFrom(ll, 64),
		)
	}
	return out
}

// tuneTCP sets the stack-wide TCP options.
func tuneTCP(s *stack.Stack, congestion string) error {
	// SACK: recovers from loss on the guest link without resending whole
	// windows (Linux guests always offer it).
	sack := tcpip.TCPSACKEnabled(true)
	// Receive-buffer moderation grows each connection's window with its
	// measured throughput, like Linux's tcp_moderate_rcvbuf.
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	cc := tcpip.CongestionControlOption(congestion)
	opts := []tcpip.SettableTransportProtocolOption{
		&sack,
		&moderate,
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		&cc,
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("set TCP option %T: %s", o, err)
		}
	}
	return nil
}

// tcpAddr converts a netip address to gVisor's (IPv4-mapped become IPv4).
func tcpAddr(a netip.Addr) tcpip.Address {
	a = a.Unmap()
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// netipAddr converts a gVisor address to netip (zero Addr if empty).
func netipAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// protoOf is the network protocol number of a.
func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}
