package link

import (
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestIsSYNACK: only TCP segments with both SYN and ACK are deferred.
func TestIsSYNACK(t *testing.T) {
	tests := []struct {
		name  string
		proto tcpip.TransportProtocolNumber
		flags header.TCPFlags
		want  bool
	}{
		{"syn-ack", header.TCPProtocolNumber, header.TCPFlagSyn | header.TCPFlagAck, true},
		{"syn", header.TCPProtocolNumber, header.TCPFlagSyn, false},
		{"ack", header.TCPProtocolNumber, header.TCPFlagAck, false},
		{"fin-ack", header.TCPProtocolNumber, header.TCPFlagFin | header.TCPFlagAck, false},
		{"udp", header.UDPProtocolNumber, header.TCPFlagSyn | header.TCPFlagAck, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				ReserveHeaderBytes: header.TCPMinimumSize,
				Payload:            buffer.MakeWithData([]byte{1}),
			})
			defer pkt.DecRef()
			header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize)).Encode(&header.TCPFields{
				SrcPort: 80, DstPort: 40000, Flags: tt.flags, DataOffset: header.TCPMinimumSize,
			})
			pkt.TransportProtocolNumber = tt.proto
			if got := isSYNACK(pkt); got != tt.want {
				t.Fatalf("isSYNACK = %v, want %v", got, tt.want)
			}
		})
	}
}
