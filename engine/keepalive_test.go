package engine

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TestSetKeepalive: a guest-side endpoint gets keepalive on, with the
// engine's times rather than gVisor's defaults.
func TestSetKeepalive(t *testing.T) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	defer s.Destroy()
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		t.Fatal(terr)
	}
	defer ep.Close()
	setKeepalive(ep)
	if !ep.SocketOptions().GetKeepAlive() {
		t.Fatal("keepalive is off")
	}
	var idle tcpip.KeepaliveIdleOption
	var intvl tcpip.KeepaliveIntervalOption
	if err := ep.GetSockOpt(&idle); err != nil || time.Duration(idle) != keepaliveIdle {
		t.Fatalf("idle = %v, %v; want %v", time.Duration(idle), err, keepaliveIdle)
	}
	if err := ep.GetSockOpt(&intvl); err != nil || time.Duration(intvl) != keepaliveInterval {
		t.Fatalf("interval = %v, %v; want %v", time.Duration(intvl), err, keepaliveInterval)
	}
	if n, err := ep.GetSockOptInt(tcpip.KeepaliveCountOption); err != nil || n != keepaliveCount {
		t.Fatalf("count = %d, %v; want %d", n, err, keepaliveCount)
	}
}
