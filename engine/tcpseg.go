package engine

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
)

// ipFrame is an Ethernet frame's IP packet as parseIPFrame found it.
type ipFrame struct {
	netProto tcpip.NetworkProtocolNumber
	src, dst tcpip.Address
	// l4Off is the transport header's offset in the frame, l4Len the IP
	// payload's length (the frame may hold more: Ethernet padding).
	l4Off, l4Len int
}

// parseIPFrame parses the IP header of an Ethernet frame of frameLen bytes
// whose first bytes are head. It accepts only what the fast paths take: an
// IPv4 packet without options or fragmentation, or an IPv6 one without
// extension headers, carrying transport protocol proto, whose lengths are
// consistent with the frame (as gVisor's parsers require) and whose
// transport header of at least minL4 bytes is in head. The IPv4 header
// checksum is left to the caller.
func parseIPFrame(head []byte, frameLen int, proto tcpip.TransportProtocolNumber, minL4 int) (ipFrame, bool) {
	if len(head) < ethLen || frameLen < len(head) {
		return ipFrame{}, false
	}
	switch binary.BigEndian.Uint16(head[12:14]) {
	case uint16(header.IPv4ProtocolNumber):
		if len(head) < ipv4FastLen+minL4 {
			return ipFrame{}, false
		}
		ip := header.IPv4(head[ethLen:ipv4FastLen])
		total := int(ip.TotalLength())
		switch {
		case head[ethLen] != 0x45: // version 4, no options
			return ipFrame{}, false
		case ip.Protocol() != uint8(proto):
			return ipFrame{}, false
		case ip.More() || ip.FragmentOffset() != 0:
			return ipFrame{}, false
		case total < header.IPv4MinimumSize+minL4 || ethLen+total > frameLen:
			return ipFrame{}, false
		}
		return ipFrame{header.IPv4ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), ipv4FastLen, total - header.IPv4MinimumSize}, true
	case uint16(header.IPv6ProtocolNumber):
		if len(head) < ipv6FastLen+minL4 {
			return ipFrame{}, false
		}
		ip := header.IPv6(head[ethLen:ipv6FastLen])
		payload := int(ip.PayloadLength())
		switch {
		case head[ethLen]>>4 != 6:
			return ipFrame{}, false
		case ip.NextHeader() != uint8(proto):
			return ipFrame{}, false
		case payload < minL4 || ipv6FastLen+payload > frameLen:
			return ipFrame{}, false
		}
		return ipFrame{header.IPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), ipv6FastLen, payload}, true
	}
	return ipFrame{}, false
}

// tcpSeg is a guest's TCP segment as parseTCPFrame found it.
type tcpSeg struct {
	netProto tcpip.NetworkProtocolNumber
	// id is the stack's key for the segment: local is its destination.
	id stack.TransportEndpointID
	// tcpOff is the TCP header's offset in the frame, dataOff its
	// payload's, end the segment's end.
	tcpOff, dataOff, end int
	seq, ack             uint32
	flags                header.TCPFlags
	wnd                  uint16
}

// dataLen is the payload's length.
func (s *tcpSeg) dataLen() int { return s.end - s.dataOff }

// seqLen is the sequence space the segment takes: its payload, plus one
// for SYN and for FIN.
func (s *tcpSeg) seqLen() uint32 {
	n := uint32(s.dataLen())
	if s.flags&header.TCPFlagSyn != 0 {
		n++
	}
	if s.flags&header.TCPFlagFin != 0 {
		n++
	}
	return n
}

// parseTCPFrame parses a guest's TCP segment in an Ethernet frame of
// frameLen bytes whose first bytes (all of its headers, if it is one the
// fast path takes) are head. Checksums are left to the caller.
func parseTCPFrame(head []byte, frameLen int) (tcpSeg, bool) {
	ipf, ok := parseIPFrame(head, frameLen, header.TCPProtocolNumber, header.TCPMinimumSize)
	if !ok {
		return tcpSeg{}, false
	}
	th := header.TCP(head[ipf.l4Off:])
	hl := int(th.DataOffset())
	if hl < header.TCPMinimumSize || hl > ipf.l4Len || ipf.l4Off+hl > len(head) {
		return tcpSeg{}, false
	}
	return tcpSeg{
		netProto: ipf.netProto,
		id: stack.TransportEndpointID{
			LocalPort: th.DestinationPort(), LocalAddress: ipf.dst,
			RemotePort: th.SourcePort(), RemoteAddress: ipf.src,
		},
		tcpOff:  ipf.l4Off,
		dataOff: ipf.l4Off + hl,
		end:     ipf.l4Off + ipf.l4Len,
		seq:     th.SequenceNumber(),
		ack:     th.AckNumber(),
		flags:   th.Flags(),
		wnd:     th.WindowSize(),
	}, true
}

// tcpChecksumValid verifies the checksums of a segment the link did not
// (a link without the virtio-net header).
func tcpChecksumValid(s *tcpSeg, fr link.Frame) bool {
	head := fr.Segs[0]
	if s.netProto == header.IPv4ProtocolNumber && !header.IPv4(head[ethLen:ipv4FastLen]).IsChecksumValid() {
		return false
	}
	tcpLen := s.end - s.tcpOff
	// A Checksumer: a segment of odd length shifts the bytes of the next
	// one (the link's buffers are even-sized; Frame does not promise it).
	var c checksum.Checksumer
	forSegRange(fr.Segs, s.tcpOff, s.end, c.Add)
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, s.id.RemoteAddress, s.id.LocalAddress, uint16(tcpLen))
	return checksum.Combine(pseudo, c.Checksum()) == 0xffff
}

// segOut describes a segment to the guest.
type segOut struct {
	flags    header.TCPFlags
	seq, ack uint32
	wnd      uint16
	opts     []byte // TCP options, a multiple of 4 bytes
	payload  []byte
	mss      int // segment size for a GSO frame (payload longer than mss)
}

// Frame layout limits of segments to the guest.
const (
	// maxSegHdr is the longest header block a segment needs: Ethernet,
	// IPv6 and TCP with the most options (SACK blocks).
	maxSegHdr = ethLen + header.IPv6MinimumSize + header.TCPMinimumSize + header.TCPOptionsMaximumSize
	// tcpCsumOffset is the checksum's offset in the TCP header.
	tcpCsumOffset = 16
)

// tcpTemplate builds the headers of segments from the engine to a guest:
// Ethernet, IP and TCP, addressed as the reverse of the guest's flow.
type tcpTemplate struct {
	id       stack.TransportEndpointID
	v6       bool
	src, dst tcpip.LinkAddress // ours, the guest's
	partial  bool              // the link takes partial checksums
	ipID     uint16
	buf      [maxSegHdr]byte
}

// ipLen is the IP header's length.
func (t *tcpTemplate) ipLen() int {
	if t.v6 {
		return header.IPv6MinimumSize
	}
	return header.IPv4MinimumSize
}

// build writes the headers of s into t.buf and returns them with the
// virtio-net header that goes with them.
func (t *tcpTemplate) build(s *segOut) ([]byte, link.VnetHdr) {
	ipLen := t.ipLen()
	tcpHL := header.TCPMinimumSize + len(s.opts)
	hdrLen := ethLen + ipLen + tcpHL
	tcpLen := tcpHL + len(s.payload)
	b := t.buf[:hdrLen]
	eth := header.Ethernet(b)
	eth.Encode(&header.EthernetFields{SrcAddr: t.src, DstAddr: t.dst, Type: t.netProto()})
	if t.v6 {
		header.IPv6(b[ethLen:]).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           t.id.LocalAddress,
			DstAddr:           t.id.RemoteAddress,
		})
	} else {
		t.ipID++
		ip := header.IPv4(b[ethLen:])
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(ipLen + tcpLen),
			ID:          t.ipID,
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     t.id.LocalAddress,
			DstAddr:     t.id.RemoteAddress,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	th := header.TCP(b[ethLen+ipLen:])
	th.Encode(&header.TCPFields{
		SrcPort:    t.id.LocalPort,
		DstPort:    t.id.RemotePort,
		SeqNum:     s.seq,
		AckNum:     s.ack,
		DataOffset: uint8(tcpHL),
		Flags:      s.flags,
		WindowSize: s.wnd,
	})
	copy(th[header.TCPMinimumSize:], s.opts)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, t.id.LocalAddress, t.id.RemoteAddress, uint16(tcpLen))
	var vh link.VnetHdr
	if t.partial {
		th.SetChecksum(sum)
		vh = link.VnetHdr{
			Flags:      link.VnetFlagNeedsCsum,
			HdrLen:     uint16(hdrLen),
			CsumStart:  uint16(ethLen + ipLen),
			CsumOffset: tcpCsumOffset,
		}
		if s.mss > 0 && len(s.payload) > s.mss {
			vh.GSOType = link.VnetGSOTCPv4
			if t.v6 {
				vh.GSOType = link.VnetGSOTCPv6
			}
			vh.GSOSize = uint16(s.mss)
		}
	} else {
		sum = checksum.Checksum(s.payload, sum)
		sum = checksum.Checksum(th[:tcpHL], sum)
		th.SetChecksum(^sum)
	}
	return b, vh
}

func (t *tcpTemplate) netProto() tcpip.NetworkProtocolNumber {
	if t.v6 {
		return header.IPv6ProtocolNumber
	}
	return header.IPv4ProtocolNumber
}

// Sequence number comparisons (RFC 1982 serial arithmetic).
func seqLT(a, b uint32) bool  { return int32(a-b) < 0 }
func seqLEQ(a, b uint32) bool { return int32(a-b) <= 0 }

// maxSeq is the later of two sequence numbers.
func maxSeq(a, b uint32) uint32 {
	if seqLT(a, b) {
		return b
	}
	return a
}
