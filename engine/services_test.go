package engine

import (
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

// TestServicesBoundWhenNewReturns: the supervisor writes --ready-fd without
// waiting for the engine, so the guest's first packets may be waiting in
// the TAP when the engine starts. When New returns (and the link starts
// delivering), the services must already be bound: a datagram to the DNS
// address's port 53 right away must not be answered with ICMP port
// unreachable. (The payload is not DNS, so the relay drops it and nothing
// is sent upstream.)
func TestServicesBoundWhenNewReturns(t *testing.T) {
	noLeaks(t)
	dns := netip.MustParseAddrPort("10.0.2.3:53")
	for i := range 10 {
		ep := channel.New(64, 1500, GatewayMAC)
		e, err := New(testConfig(), ep)
		if err != nil {
			t.Fatal(err)
		}
		src := netip.MustParseAddrPort("10.0.2.100:40000")
		inject(ep, header.IPv4ProtocolNumber, ipv4Packet(src.Addr(), dns.Addr(), header.UDPProtocolNumber,
			udpDatagram(src, dns, []byte("not dns"))))
		for {
			proto, out := nextOut(ep, 100*time.Millisecond)
			if out == nil {
				break
			}
			if proto == header.IPv4ProtocolNumber && header.IPv4(out).Protocol() == uint8(header.ICMPv4ProtocolNumber) &&
				header.ICMPv4(header.IPv4(out).Payload()).Type() == header.ICMPv4DstUnreachable {
				t.Fatalf("start %d: port 53 of the DNS address unreachable right after New", i)
			}
		}
		e.Close()
	}
}
