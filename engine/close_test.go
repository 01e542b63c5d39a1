package engine

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Engine.Close while a guest's TCP connection attempt is under way (the
// intermittent 127 s TestSYNFloodBounded of docs/status.md, issue 9).
// stack.Close aborts the endpoints registered when it starts; a handshake
// whose endpoint registers after that kept Close waiting (stack.Wait and
// the engine's WaitGroup) until gVisor gave up retransmitting the SYN-ACK:
// 1+2+4+...+64 s. These tests hold a connection attempt at the points
// where it can be overtaken by Close, and release it once stack.Close has
// taken its snapshot of registered endpoints.

// closeGuard only keeps a failing test from hanging for gVisor's full
// handshake timeout; a passing Close returns in milliseconds.
const closeGuard = 30 * time.Second

// closingEngine is an engine for these tests: the test closes it itself
// (a Cleanup Close would wait for a hung first Close).
func closingEngine(t *testing.T, opts ...Option) (*Engine, *channel.Endpoint) {
	t.Helper()
	ep := channel.New(256, 1500, GatewayMAC)
	e, err := New(testConfig(), ep, append([]Option{WithoutServices()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e, ep
}

// hostTarget is a host TCP port on 127.0.0.1 that completes connections
// (in the kernel's backlog) without anyone accepting them.
func hostTarget(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort().Port()
}

// closeSentinel listens on a port of e's stack; the returned channel
// receives once stack.Close has aborted the listener, that is once it has
// listed the registered endpoints it aborts: an endpoint that registers
// after that is not in its list.
func closeSentinel(t *testing.T, e *Engine) <-chan struct{} {
	t.Helper()
	wq := new(waiter.Queue)
	entry, aborted := waiter.NewChannelEntry(waiter.EventHUp)
	wq.EventRegister(&entry)
	ep, terr := e.Stack().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, wq)
	if terr != nil {
		t.Fatalf("sentinel endpoint: %s", terr)
	}
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(gw4)}); terr != nil {
		t.Fatalf("sentinel bind: %s", terr)
	}
	if terr := ep.Listen(1); terr != nil {
		t.Fatalf("sentinel listen: %s", terr)
	}
	return aborted
}

// closeAsync runs e.Close on a goroutine; the channel closes when it
// returns.
func closeAsync(e *Engine) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		e.Close()
		close(done)
	}()
	return done
}

// waitClosed fails the test unless Close returns within closeGuard.
func waitClosed(t *testing.T, closed <-chan struct{}, what string) {
	t.Helper()
	awaitGuarded(t, closed, func() {}, fmt.Sprintf("Engine.Close still waiting after %v: %s", closeGuard, what))
}

// awaitGuarded waits for ch; if closeGuard passes first (a hang, not a
// timing check), it runs unblock (so that nothing stays stuck after the
// test) and fails with msg.
func awaitGuarded(t *testing.T, ch <-chan struct{}, unblock func(), msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(closeGuard):
		unblock()
		t.Fatal(msg)
	}
}

// synFrom injects a guest SYN from guest4:srcPort to the gateway's port.
func synFrom(ep *channel.Endpoint, srcPort, port uint16) {
	src := netip.AddrPortFrom(guest4, srcPort)
	dst := netip.AddrPortFrom(gw4, port)
	inject(ep, header.IPv4ProtocolNumber, tcpSegment4(src, dst, 1000, header.TCPFlagSyn, 65535, nil))
}

// holdHandshake holds the handshake of the guest connection from
// guest4:srcPort at the engine's beforeHandshake hook: reached receives when
// it gets there, and it goes on once release is closed.
func holdHandshake(srcPort uint16, reached chan<- struct{}, release <-chan struct{}) Option {
	return func(o *options) {
		o.beforeHandshake = func(id stack.TransportEndpointID) {
			if id.RemotePort == srcPort {
				reached <- struct{}{}
				<-release
			}
		}
	}
}

// attemptID is the id of the guest connection attempt from guest4:srcPort
// to the gateway's port.
func attemptID(srcPort, port uint16) stack.TransportEndpointID {
	return stack.TransportEndpointID{
		LocalPort: port, LocalAddress: tcpAddr(gw4), RemotePort: srcPort, RemoteAddress: tcpAddr(guest4),
	}
}

// tcpReplyTo returns the flags of the next TCP segment the engine sends to
// guest4:dstPort, skipping everything else; ok is false if none comes
// within closeGuard (or the link closed).
func tcpReplyTo(ep *channel.Endpoint, dstPort uint16) (flags header.TCPFlags, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), closeGuard)
	defer cancel()
	for {
		pkt := ep.ReadContext(ctx)
		if pkt == nil {
			return 0, false
		}
		b := pkt.ToView().AsSlice()
		pkt.DecRef()
		if len(b) < header.IPv4MinimumSize {
			continue
		}
		ip := header.IPv4(b)
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.DestinationAddress() != tcpAddr(guest4) {
			continue
		}
		if th := header.TCP(ip.Payload()); len(th) >= header.TCPMinimumSize && th.DestinationPort() == dstPort {
			return th.Flags(), true
		}
	}
}

// TestCloseAbortsHandshakeStartedLate: a connection attempt that passed
// every check before Close began but registers its endpoint (starts its
// handshake) only after stack.Close aborted the registered ones. Close
// must abort it too instead of waiting for its handshake to time out.
func TestCloseAbortsHandshakeStartedLate(t *testing.T) {
	noLeaks(t)
	port := hostTarget(t)
	reached := make(chan struct{}, 1)
	release := make(chan struct{})
	e, ep := closingEngine(t, holdHandshake(30000, reached, release))
	sentinel := closeSentinel(t, e)

	synFrom(ep, 30000, port)
	awaitGuarded(t, reached, func() { e.Close() }, "the guest's SYN never reached its handshake")
	closed := closeAsync(e)
	awaitGuarded(t, sentinel, func() { close(release) }, "stack.Close never aborted the sentinel listener")
	close(release) // the handshake starts now, after stack.Close's abort
	waitClosed(t, closed, "a handshake that started while it closed the stack")
	// The attempt did start its handshake (after the abort: not a vacuous
	// pass), and Close ended it.
	if n := e.Stack().Stats().TCP.FailedConnectionAttempts.Value(); n != 1 {
		t.Errorf("%d handshakes failed, want 1 (the one started during Close)", n)
	}
}

// TestCloseRefusesHandshakeAfterClose: a connection attempt whose SYN was
// taken before Close began but that reaches its handshake only after
// stack.Close must not start one: the guest gets a reset. A first attempt,
// held as in TestCloseAbortsHandshakeStartedLate, keeps Close from going
// past its handshakes (and detaching the link) meanwhile.
func TestCloseRefusesHandshakeAfterClose(t *testing.T) {
	noLeaks(t)
	port := hostTarget(t)
	reached := make(chan struct{}, 1)
	release := make(chan struct{})
	e, ep := closingEngine(t, holdHandshake(30000, reached, release))
	// The relay scheduler exists already, so that nothing else stops the
	// second attempt once released; holding its lock holds that attempt
	// before its dial.
	if _, err := e.tcp.relay(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	sentinel := closeSentinel(t, e)

	synFrom(ep, 30000, port)
	awaitGuarded(t, reached, func() { e.Close() }, "the first SYN never reached its handshake")
	e.tcp.schedMu.Lock()
	synFrom(ep, 30001, port) // handled synchronously
	e.tcp.mu.Lock()
	_, taken := e.tcp.inFlight[attemptID(30001, port)]
	e.tcp.mu.Unlock()
	if !taken {
		e.tcp.schedMu.Unlock()
		close(release)
		e.Close()
		t.Fatal("the second SYN was not taken as a connection attempt")
	}
	closed := closeAsync(e)
	awaitGuarded(t, sentinel, func() {
		e.tcp.schedMu.Unlock()
		close(release)
	}, "stack.Close never aborted the sentinel listener")
	e.tcp.schedMu.Unlock() // the second attempt dials and reaches its handshake now
	flags, ok := tcpReplyTo(ep, 30001)
	close(release)
	waitClosed(t, closed, "connection attempts that reached their handshake during Close")
	switch {
	case !ok:
		t.Error("the guest got no answer to a SYN taken before Close")
	case flags.Contains(header.TCPFlagSyn):
		t.Errorf("a handshake started after Close began (the guest got %v)", flags)
	case !flags.Contains(header.TCPFlagRst):
		t.Errorf("the guest got %v, want a reset", flags)
	}
	// Only the first attempt's handshake ran (and Close aborted it).
	if n := e.Stack().Stats().TCP.FailedConnectionAttempts.Value(); n != 1 {
		t.Errorf("%d handshakes failed, want 1 (the first attempt's)", n)
	}
}
