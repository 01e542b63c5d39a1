package link

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VnetHdrSize is the size of struct virtio_net_hdr (without the
// num_buffers field), the header a TAP opened with IFF_VNET_HDR puts in
// front of every frame unless TUNSETVNETHDRSZ changed it.
const VnetHdrSize = 10

// virtio_net_hdr flags (include/uapi/linux/virtio_net.h).
const (
	// VnetFlagNeedsCsum says the transport checksum is partial: the
	// checksum field holds the pseudo-header sum and the full checksum
	// must be computed from CsumStart and stored at CsumStart+CsumOffset.
	VnetFlagNeedsCsum = 1
	// VnetFlagDataValid says the checksum was already verified.
	VnetFlagDataValid = 2
)

// virtio_net_hdr gso_type values.
const (
	VnetGSONone  = 0    // not a GSO frame
	VnetGSOTCPv4 = 1    // TCP over IPv4 segmentation
	VnetGSOUDP   = 3    // UDP fragmentation offload (UFO)
	VnetGSOTCPv6 = 4    // TCP over IPv6 segmentation
	VnetGSOUDPL4 = 5    // UDP segmentation (USO)
	VnetGSOECN   = 0x80 // flag: the TCP segments carry ECN (CWR)
)

// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h). They tell the kernel
// which offloaded frames the reader of a TAP accepts.
const (
	TunFCsum   = 0x01 // accepts frames with a partial checksum
	TunFTSO4   = 0x02 // accepts TCPv4 GSO frames
	TunFTSO6   = 0x04 // accepts TCPv6 GSO frames
	TunFTSOECN = 0x08 // accepts TSO frames with ECN
	TunFUFO    = 0x10 // accepts UFO frames
)

// VnetHdr is a decoded struct virtio_net_hdr. The TAP device uses the
// host's byte order (little endian on every platform we run on, and
// TUNSETVNETLE/BE is never set by us).
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// Encode writes h into b, which must be at least VnetHdrSize bytes long.
func (h *VnetHdr) Encode(b []byte) {
	_ = b[VnetHdrSize-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

// DecodeVnetHdr decodes the first VnetHdrSize bytes of b.
func DecodeVnetHdr(b []byte) (VnetHdr, error) {
	if len(b) < VnetHdrSize {
		return VnetHdr{}, fmt.Errorf("virtio-net header: %d bytes, want %d", len(b), VnetHdrSize)
	}
	return VnetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.NativeEndian.Uint16(b[2:]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}, nil
}

// Errors returned by CheckInbound. Each makes the frame be dropped.
var (
	ErrShortFrame     = errors.New("frame shorter than an Ethernet header")
	ErrUnsupportedGSO = errors.New("unsupported virtio-net GSO type")
	ErrBadCsumRange   = errors.New("partial checksum range outside the frame")
	ErrGSOProtocol    = errors.New("GSO type does not match the frame's protocol")
)

// CheckInbound validates a virtio-net header against the Ethernet frame that
// follows it (frameLen bytes, of which head holds at least the first
// min(frameLen, 14+60) bytes). It accepts plain frames, frames with a
// partial checksum and TCP GSO frames; everything else is an error.
func CheckInbound(h VnetHdr, head []byte, frameLen int) error {
	if frameLen < ethHdrLen || len(head) < ethHdrLen {
		return ErrShortFrame
	}
	if h.Flags&VnetFlagNeedsCsum != 0 {
		if int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
			return ErrBadCsumRange
		}
	}
	ethType := binary.BigEndian.Uint16(head[12:14])
	switch h.GSOType &^ VnetGSOECN {
	case VnetGSONone:
		return nil
	case VnetGSOTCPv4:
		if ethType != ethTypeIPv4 {
			return ErrGSOProtocol
		}
		return nil
	case VnetGSOTCPv6:
		if ethType != ethTypeIPv6 {
			return ErrGSOProtocol
		}
		return nil
	default:
		return ErrUnsupportedGSO
	}
}

// FixGSOLength makes the IP length field of a GSO frame match the frame's
// real length. head holds the start of the frame (Ethernet header
// included) and is modified in place; frameLen is the whole frame's length.
// Linux fills the length in for GSO frames up to 64 KiB, but a BIG TCP
// frame carries 0 there; gVisor trusts the length field and would cut the
// segment, so we repair it when the frame fits the field. It reports
// whether it changed anything.
func FixGSOLength(head []byte, frameLen int) bool {
	if len(head) < ethHdrLen {
		return false
	}
	ip := head[ethHdrLen:]
	ipLen := frameLen - ethHdrLen
	switch binary.BigEndian.Uint16(head[12:14]) {
	case ethTypeIPv4:
		if len(ip) < ipv4MinLen || ip[0]>>4 != 4 || ipLen > 0xffff {
			return false
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < ipv4MinLen || ihl > len(ip) {
			return false
		}
		if int(binary.BigEndian.Uint16(ip[2:4])) == ipLen {
			return false
		}
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen))
		binary.BigEndian.PutUint16(ip[10:12], 0)
		binary.BigEndian.PutUint16(ip[10:12], ^onesSum(ip[:ihl]))
		return true
	case ethTypeIPv6:
		if len(ip) < ipv6HdrLen || ip[0]>>4 != 6 || ipLen < ipv6HdrLen || ipLen-ipv6HdrLen > 0xffff {
			return false
		}
		// Only a zero payload length is repaired, and only when the frame
		// carries a payload: a header-only frame's 0 is already right
		// (found by FuzzInbound: rewriting it made the fix non-idempotent).
		if binary.BigEndian.Uint16(ip[4:6]) != 0 || ipLen == ipv6HdrLen {
			return false
		}
		binary.BigEndian.PutUint16(ip[4:6], uint16(ipLen-ipv6HdrLen))
		return true
	}
	return false
}

// onesSum is the 16-bit ones' complement sum of b (RFC 1071), used only
// for the small IPv4 header.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

const (
	ethHdrLen   = 14
	ethTypeIPv4 = 0x0800
	ethTypeIPv6 = 0x86dd
	ipv4MinLen  = 20
	ipv6HdrLen  = 40
	tcpCsumOff  = 16
)
