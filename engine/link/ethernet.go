package link

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Addresser is what AddEthernetHeader asks for the source MAC when the
// route names none: any stack.LinkEndpoint is one.
type Addresser interface {
	LinkAddress() tcpip.LinkAddress
}

// AddEthernetHeader pushes pkt's Ethernet header, as stack.LinkEndpoint's
// AddHeader does. The source is the route's local link address or, when that
// is empty, ep's own; ep is asked only then, so that the common path takes no
// lock. Endpoint and the engine's BESS link share it so that both frame
// packets identically.
func AddEthernetHeader(pkt *stack.PacketBuffer, ep Addresser) {
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = ep.LinkAddress()
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseEthernetHeader consumes pkt's Ethernet header and sets its network
// protocol, as stack.LinkEndpoint's ParseHeader does. It reports false when
// the packet is too short for the header.
func ParseEthernetHeader(pkt *stack.PacketBuffer) bool {
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		return false
	}
	pkt.NetworkProtocolNumber = header.Ethernet(hdr).Type()
	return true
}
