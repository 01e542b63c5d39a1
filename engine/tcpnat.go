package engine

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// Keepalive on the guest-side endpoints: notice a vanished guest within a
// few minutes instead of gVisor's default two hours. The host side uses
// net.Dialer's keepalive (15 s idle).
const (
	keepaliveIdle     = 60 * time.Second
	keepaliveInterval = 15 * time.Second
	keepaliveCount    = 4
)

// tcpNAT turns each guest TCP connection into a host connection to the same
// destination (or the host's loopback for the gateway).
type tcpNAT struct {
	e   *Engine
	fwd *tcp.Forwarder

	// inFlight dedupes SYN retransmits and caps connection attempts that
	// wait for the host dial, in total and per guest address, so that a
	// guest scanning ports cannot exhaust goroutines or host sockets.
	// They are also the attempts Close must end (handshake.go); closing
	// stops new handshakes.
	mu       sync.Mutex
	inFlight map[stack.TransportEndpointID]struct{}
	perSrc   map[tcpip.Address]int
	closing  bool

	schedMu sync.Mutex
	sched   atomic.Pointer[relaySched] // see relay; set under schedMu
}

func newTCPNAT(e *Engine) *tcpNAT {
	t := &tcpNAT{
		e:        e,
		inFlight: make(map[stack.TransportEndpointID]struct{}),
		perSrc:   make(map[tcpip.Address]int),
	}
	// gVisor's own in-flight limit is set above ours so that it never drops
	// a SYN we accounted for (we release only after Complete).
	t.fwd = tcp.NewForwarder(e.stack, 0, e.opts.synLimit+1, t.handle)
	e.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, t.handlePacket)
	return t
}

// handlePacket is the stack's handler for TCP segments no endpoint claimed.
// It returns true when the packet was consumed (dropped or forwarded).
func (t *tcpNAT) handlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize {
		return false
	}
	flags := th.Flags()
	if !flags.Contains(header.TCPFlagSyn) || flags.Contains(header.TCPFlagAck) {
		// Not a connection attempt: let the stack answer with a reset.
		return false
	}
	switch t.acquire(id) {
	case acquireDuplicate:
		return true // a retransmit of a SYN being handled: drop
	case acquireOverLimit:
		t.e.stats.SYNDropped.Add(1)
		return true // the guest retransmits later
	}
	if !t.fwd.HandlePacket(id, pkt) {
		t.release(id)
		return false
	}
	return true
}

type acquireResult int

const (
	acquireOK acquireResult = iota
	acquireDuplicate
	acquireOverLimit
)

// acquire records a new connection attempt; on acquireOK the caller owns a
// slot (and an engine WaitGroup count) until release.
func (t *tcpNAT) acquire(id stack.TransportEndpointID) acquireResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.inFlight[id]; ok {
		return acquireDuplicate
	}
	if len(t.inFlight) >= t.e.opts.synLimit || t.perSrc[id.RemoteAddress] >= t.e.opts.synLimitPerSrc {
		return acquireOverLimit
	}
	t.inFlight[id] = struct{}{}
	t.perSrc[id.RemoteAddress]++
	t.e.wg.Add(1)
	return acquireOK
}

func (t *tcpNAT) release(id stack.TransportEndpointID) {
	t.mu.Lock()
	delete(t.inFlight, id)
	if n := t.perSrc[id.RemoteAddress] - 1; n > 0 {
		t.perSrc[id.RemoteAddress] = n
	} else {
		delete(t.perSrc, id.RemoteAddress)
	}
	t.mu.Unlock()
	t.e.wg.Done()
}

// handle runs on the forwarder's fresh goroutine for each new guest
// connection and hands the connection to a pooled worker (workerPool),
// whose stack has grown already: connect's chain through gVisor's
// handshake (CreateEndpoint) outgrows a fresh goroutine's stack, and the
// copying was ~7 % of the engine's user CPU in netbench's connection test
// (runtime.morestack; 0.3 % pooled). The handoff readies a parked worker on
// the same P. Measured (scripts/netab crr, 5 interleaved rounds, 2 CPUs):
// 2749-2879 vs 2486-2857 connections/s, 227-242 vs 250-265 us of engine
// CPU per connection.
func (t *tcpNAT) handle(r *tcp.ForwarderRequest) {
	t.e.goFunc(func() { t.connect(r) })
}

// connect dials the host first, and only then accepts the guest's SYN, so
// that a refused port gives the guest a reset at once; then it hands the
// pair to the relay.
func (t *tcpNAT) connect(r *tcp.ForwarderRequest) {
	id := r.ID()
	sched, err := t.relay()
	if err != nil {
		t.e.logf("tcp: %v", err)
		r.Complete(true)
		t.release(id)
		return
	}
	fd, err := t.dial(id)
	if err != nil {
		t.e.stats.TCPRefused.Add(1)
		r.Complete(true)
		t.release(id)
		return
	}
	wq := new(waiter.Queue)
	ep, terr := t.createEndpoint(r, wq)
	if terr != nil {
		// The guest gave up (or sent a RST) while we dialed, or the
		// engine is closing.
		resetFD(fd)
		r.Complete(true)
		t.release(id)
		return
	}
	r.Complete(false)
	setKeepalive(ep)
	sched.start(ep, wq, fd, &t.e.conns)
	t.release(id) // after start: the engine's Close waits for it
}

// relay returns the engine's relay scheduler, started on first use; it is
// closed with the engine's connections.
func (t *tcpNAT) relay() (*relaySched, error) {
	t.schedMu.Lock()
	defer t.schedMu.Unlock()
	if s := t.sched.Load(); s != nil {
		return s, nil
	}
	s, err := newRelaySched(t.e)
	if err != nil {
		return nil, err
	}
	if !t.e.conns.add(s) {
		return nil, errClosed
	}
	t.sched.Store(s)
	return s, nil
}

// dial connects to the host destination of a guest flow and returns the
// connected socket, non-blocking.
func (t *tcpNAT) dial(id stack.TransportEndpointID) (int, error) {
	dst, local, err := t.target(id)
	if err != nil {
		return -1, err
	}
	return dialHost(t.e.ctx, dst, local, t.e.opts.dialTimeout)
}

// target is the host destination of a guest flow and the local address
// to bind to, or why the flow may not leave (policy.OutboundTarget).
func (t *tcpNAT) target(id stack.TransportEndpointID) (netip.AddrPort, netip.Addr, error) {
	target, err := policy.OutboundTarget(t.e.plan, t.e.cfg, netipAddr(id.LocalAddress))
	if err != nil {
		return netip.AddrPort{}, netip.Addr{}, err
	}
	target = target.Unmap()
	return netip.AddrPortFrom(target, id.LocalPort), t.e.outboundFor(target), nil
}

// outboundFor is the local address host sockets to target bind to: the
// --outbound-addr of target's family, for every target including the host's
// loopback behind the gateway, as in the C version (Linux connects a socket
// bound to any local address to 127.0.0.1 and ::1).
func (e *Engine) outboundFor(target netip.Addr) netip.Addr {
	if target.Is4() {
		return e.outbound4
	}
	return e.outbound6
}

// setKeepalive turns TCP keepalive on for a guest-side endpoint. The
// times go first: each option re-arms gVisor's keepalive timer if
// keepalive is on, so switching it on last arms the timer once, at the
// right time, instead of creating it for gVisor's default of two hours and
// moving it.
func setKeepalive(ep tcpip.Endpoint) {
	idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
	_ = ep.SetSockOpt(&idle)
	intvl := tcpip.KeepaliveIntervalOption(keepaliveInterval)
	_ = ep.SetSockOpt(&intvl)
	_ = ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
	ep.SocketOptions().SetKeepAlive(true)
}

// ctxDone reports whether ctx has ended.
func ctxDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}
