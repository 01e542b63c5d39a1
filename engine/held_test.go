package engine

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestHeldLinkDeliversOnlyAfterRelease: frames the link receives before
// release reach nobody (they stay queued in the real TAP); after release
// the stack's dispatcher gets them.
func TestHeldLinkDeliversOnlyAfterRelease(t *testing.T) {
	ch := channel.New(4, 1500, GatewayMAC)
	h := newHeldLink(ch)
	d := &countingDispatcher{}
	h.Attach(d)
	if ch.IsAttached() {
		t.Fatal("link attached before release")
	}
	if !h.IsAttached() {
		t.Error("held link does not report the stack's Attach")
	}
	inject(ch, header.IPv4ProtocolNumber, ipv4Packet(guest4, gw4, header.UDPProtocolNumber, make([]byte, 8)))
	if d.n != 0 {
		t.Fatalf("%d frames delivered while held", d.n)
	}
	h.release()
	h.release() // idempotent
	if !ch.IsAttached() {
		t.Fatal("link not attached after release")
	}
	inject(ch, header.IPv4ProtocolNumber, ipv4Packet(guest4, gw4, header.UDPProtocolNumber, make([]byte, 8)))
	if d.n != 1 {
		t.Fatalf("%d frames delivered after release, want 1", d.n)
	}
	h.Attach(nil) // the stack detaching on close passes through
	if ch.IsAttached() {
		t.Error("link still attached after Attach(nil)")
	}
}

// countingDispatcher counts the network packets delivered to it.
type countingDispatcher struct{ n int }

func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.n++
}

func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestNewWithLinkHeld: with WithLinkHeld the engine's link stays detached
// after New (the engine process confines itself then) until ReleaseLink.
func TestNewWithLinkHeld(t *testing.T) {
	noLeaks(t)
	ch := channel.New(4, 1500, GatewayMAC)
	e, err := New(testConfig(), ch, WithoutServices(), WithLinkHeld())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if ch.IsAttached() {
		t.Fatal("link attached before ReleaseLink")
	}
	e.ReleaseLink()
	if !ch.IsAttached() {
		t.Fatal("link not attached after ReleaseLink")
	}
}
