package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestVnetHdrEncodeDecode(t *testing.T) {
	tests := []struct {
		name string
		h    VnetHdr
		want []byte
	}{
		{"zero", VnetHdr{}, make([]byte, VnetHdrSize)},
		{"tcp4 gso", VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16},
			[]byte{1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0}},
		{"tcp6 gso ecn", VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv6 | VnetGSOECN, HdrLen: 86, GSOSize: 1428, CsumStart: 54, CsumOffset: 16},
			[]byte{1, 0x84, 86, 0, 0x94, 0x05, 54, 0, 16, 0}},
		{"max", VnetHdr{0xff, 0xff, 0xffff, 0xffff, 0xffff, 0xffff}, bytes.Repeat([]byte{0xff}, VnetHdrSize)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, VnetHdrSize)
			tt.h.Encode(b)
			if !bytes.Equal(b, tt.want) {
				t.Fatalf("Encode = %v, want %v", b, tt.want)
			}
			got, err := DecodeVnetHdr(b)
			if err != nil || got != tt.h {
				t.Fatalf("DecodeVnetHdr = %+v, %v; want %+v", got, err, tt.h)
			}
		})
	}
	if _, err := DecodeVnetHdr(make([]byte, VnetHdrSize-1)); err == nil {
		t.Fatal("DecodeVnetHdr accepted a short header")
	}
}

// ethFrame returns an Ethernet frame of the given type, padded to n bytes.
func ethFrame(ethType uint16, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[12:], ethType)
	return b
}

func TestCheckInbound(t *testing.T) {
	v4 := ethFrame(ethTypeIPv4, 1000)
	v6 := ethFrame(ethTypeIPv6, 1000)
	tests := []struct {
		name  string
		h     VnetHdr
		frame []byte
		want  error
	}{
		{"plain", VnetHdr{}, v4, nil},
		{"data valid", VnetHdr{Flags: VnetFlagDataValid}, v4, nil},
		{"partial csum", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, v4, nil},
		{"csum at end", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 990, CsumOffset: 8}, v4, nil},
		{"csum past end", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 990, CsumOffset: 9}, v4, ErrBadCsumRange},
		{"csum huge", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}, v4, ErrBadCsumRange},
		{"tcp4 gso", VnetHdr{GSOType: VnetGSOTCPv4, GSOSize: 1448}, v4, nil},
		{"tcp4 gso ecn", VnetHdr{GSOType: VnetGSOTCPv4 | VnetGSOECN}, v4, nil},
		{"tcp6 gso", VnetHdr{GSOType: VnetGSOTCPv6}, v6, nil},
		{"tcp4 gso on v6", VnetHdr{GSOType: VnetGSOTCPv4}, v6, ErrGSOProtocol},
		{"tcp6 gso on v4", VnetHdr{GSOType: VnetGSOTCPv6}, v4, ErrGSOProtocol},
		{"ufo", VnetHdr{GSOType: VnetGSOUDP}, v4, ErrUnsupportedGSO},
		{"uso", VnetHdr{GSOType: VnetGSOUDPL4}, v4, ErrUnsupportedGSO},
		{"unknown gso", VnetHdr{GSOType: 0x42}, v4, ErrUnsupportedGSO},
		{"short", VnetHdr{}, v4[:13], ErrShortFrame},
		{"empty", VnetHdr{}, nil, ErrShortFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckInbound(tt.h, tt.frame, len(tt.frame)); !errors.Is(err, tt.want) {
				t.Fatalf("CheckInbound = %v, want %v", err, tt.want)
			}
		})
	}
}

// ipv4Frame builds Ethernet+IPv4 headers with the given total length field
// and a valid header checksum, padded to n bytes.
func ipv4Frame(totalLen uint16, n int) []byte {
	b := ethFrame(ethTypeIPv4, n)
	ip := header.IPv4(b[ethHdrLen:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: totalLen, TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 2, 100}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 2, 2}),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

func ipv6Frame(payloadLen uint16, n int) []byte {
	b := ethFrame(ethTypeIPv6, n)
	ip := header.IPv6(b[ethHdrLen:])
	ip.Encode(&header.IPv6Fields{PayloadLength: payloadLen, TransportProtocol: header.TCPProtocolNumber, HopLimit: 64})
	return b
}

func TestFixGSOLength(t *testing.T) {
	tests := []struct {
		name      string
		frame     []byte
		frameLen  int
		wantFixed bool
		wantLen   int // IPv4 total length or IPv6 payload length afterwards
	}{
		{"v4 correct", ipv4Frame(986, 1000), 1000, false, 986},
		{"v4 zero", ipv4Frame(0, 1000), 1000, true, 986},
		{"v4 short field", ipv4Frame(500, 1000), 1000, true, 986},
		{"v4 too big for field", ipv4Frame(0, 200), 70000, false, 0},
		{"v6 correct", ipv6Frame(946, 1000), 1000, false, 946},
		{"v6 zero", ipv6Frame(0, 1000), 1000, true, 946},
		{"v6 nonzero wrong kept", ipv6Frame(12, 1000), 1000, false, 12},
		{"truncated head", ipv4Frame(0, 1000)[:20], 1000, false, 0},
		{"arp", ethFrame(0x0806, 60), 60, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FixGSOLength(tt.frame, tt.frameLen); got != tt.wantFixed {
				t.Fatalf("FixGSOLength = %v, want %v", got, tt.wantFixed)
			}
			if len(tt.frame) < ethHdrLen+ipv4MinLen {
				return
			}
			switch binary.BigEndian.Uint16(tt.frame[12:]) {
			case ethTypeIPv4:
				ip := header.IPv4(tt.frame[ethHdrLen:])
				if tt.wantLen != 0 && int(ip.TotalLength()) != tt.wantLen {
					t.Errorf("total length %d, want %d", ip.TotalLength(), tt.wantLen)
				}
				if !ip.IsChecksumValid() {
					t.Error("IPv4 header checksum invalid after fix-up")
				}
			case ethTypeIPv6:
				if got := header.IPv6(tt.frame[ethHdrLen:]).PayloadLength(); int(got) != tt.wantLen {
					t.Errorf("payload length %d, want %d", got, tt.wantLen)
				}
			}
		})
	}
}

func TestBuildOutboundHdr(t *testing.T) {
	v4 := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1448, L3HdrLen: 20, MaxSize: 65536}
	v6 := stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: 16, MSS: 1428, L3HdrLen: 40, MaxSize: 65536}
	tests := []struct {
		name                       string
		g                          stack.GSO
		link, net, trans, dataSize int
		want                       VnetHdr
	}{
		{"none", stack.GSO{}, 14, 20, 20, 100, VnetHdr{}},
		{"v4 big", v4, 14, 20, 32, 60000,
			VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}},
		{"v4 one mss", v4, 14, 20, 32, 1448,
			VnetHdr{Flags: VnetFlagNeedsCsum, HdrLen: 66, CsumStart: 34, CsumOffset: 16}},
		{"v4 ack only", v4, 14, 20, 20, 0,
			VnetHdr{Flags: VnetFlagNeedsCsum, HdrLen: 54, CsumStart: 34, CsumOffset: 16}},
		{"v6 big", v6, 14, 40, 32, 30000,
			VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv6, HdrLen: 86, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}},
		{"v4 with ip options", v4, 14, 24, 20, 5000,
			VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 58, GSOSize: 1448, CsumStart: 38, CsumOffset: 16}},
		{"gvisor gso", stack.GSO{Type: stack.GSOGvisor, MSS: 1000}, 14, 20, 20, 5000, VnetHdr{HdrLen: 54}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BuildOutboundHdr(tt.g, tt.link, tt.net, tt.trans, tt.dataSize); got != tt.want {
				t.Fatalf("BuildOutboundHdr = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestOutboundHdrFromPacket builds packets the way gVisor's TCP and IP
// layers do and checks the header taken from the PacketBuffer.
func TestOutboundHdrFromPacket(t *testing.T) {
	tests := []struct {
		name    string
		g       stack.GSO
		netLen  int
		netProt tcpip.NetworkProtocolNumber
		data    int
		want    VnetHdr
	}{
		{"v4", stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1460, L3HdrLen: 20}, 20, header.IPv4ProtocolNumber, 20000,
			VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 14 + 20 + 32, GSOSize: 1460, CsumStart: 34, CsumOffset: 16}},
		{"v6", stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: 16, MSS: 1440, L3HdrLen: 40}, 40, header.IPv6ProtocolNumber, 20000,
			VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv6, HdrLen: 14 + 40 + 32, GSOSize: 1440, CsumStart: 54, CsumOffset: 16}},
		{"plain", stack.GSO{}, 20, header.IPv4ProtocolNumber, 100, VnetHdr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				ReserveHeaderBytes: 14 + tt.netLen + 32,
				Payload:            buffer.MakeWithData(make([]byte, tt.data)),
			})
			defer pkt.DecRef()
			pkt.TransportHeader().Push(32)
			pkt.NetworkHeader().Push(tt.netLen)
			pkt.LinkHeader().Push(14)
			pkt.NetworkProtocolNumber = tt.netProt
			pkt.GSOOptions = tt.g
			if got := OutboundHdr(pkt); got != tt.want {
				t.Fatalf("OutboundHdr = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzInbound feeds arbitrary header+frame bytes to the inbound checks;
// they must never panic, and an accepted frame must satisfy the invariants
// the delivery path relies on.
func FuzzInbound(f *testing.F) {
	hdr := func(h VnetHdr) []byte {
		b := make([]byte, VnetHdrSize)
		h.Encode(b)
		return b
	}
	f.Add(append(hdr(VnetHdr{}), ipv4Frame(986, 1000)...))
	f.Add(append(hdr(VnetHdr{GSOType: VnetGSOTCPv4, Flags: VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}), ipv4Frame(0, 3000)...))
	f.Add(append(hdr(VnetHdr{GSOType: VnetGSOTCPv6}), ipv6Frame(0, 3000)...))
	f.Add(append(hdr(VnetHdr{GSOType: VnetGSOUDPL4}), ipv4Frame(0, 100)...))
	f.Add([]byte{1, 2, 3})
	f.Add(hdr(VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeVnetHdr(b)
		if err != nil {
			if len(b) >= VnetHdrSize {
				t.Fatalf("DecodeVnetHdr(%d bytes): %v", len(b), err)
			}
			return
		}
		frame := b[VnetHdrSize:]
		head := frame[:min(len(frame), 2048)]
		if CheckInbound(h, head, len(frame)) != nil {
			return
		}
		if len(frame) < ethHdrLen {
			t.Fatal("accepted a runt frame")
		}
		if h.Flags&VnetFlagNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > len(frame) {
			t.Fatal("accepted a checksum range outside the frame")
		}
		if h.GSOType != VnetGSONone {
			FixGSOLength(head, len(frame))
			// A second pass has nothing left to fix.
			if FixGSOLength(head, len(frame)) {
				t.Fatal("FixGSOLength is not idempotent")
			}
		}
		// The Ethernet parse must work on whatever was accepted.
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
		defer pkt.DecRef()
		if !(&Endpoint{}).ParseHeader(pkt) {
			t.Fatal("ParseHeader rejected an accepted frame")
		}
	})
}
