package engine

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
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
	mu       sync.Mutex
	inFlight map[stack.TransportEndpointID]struct{}
	perSrc   map[tcpip.Address]int
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

// handle runs on the forwarder's (fresh) goroutine for each new guest
// connection; the work moves to a pooled worker whose stack has already
// grown.
func (t *tcpNAT) handle(r *tcp.ForwarderRequest) {
	t.e.goFunc(func() { t.connect(r) })
}

// connect dials the host first, and only then accepts the guest's SYN, so
// that a refused port gives the guest a reset at once; then it relays.
func (t *tcpNAT) connect(r *tcp.ForwarderRequest) {
	id := r.ID()
	host, err := t.dial(id)
	if err != nil {
		t.e.stats.TCPRefused.Add(1)
		r.Complete(true)
		t.release(id)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The guest gave up (or sent a RST) while we dialed.
		host.Close()
		r.Complete(true)
		t.release(id)
		return
	}
	r.Complete(false)
	t.release(id)
	setKeepalive(ep)
	t.e.serveConns(gonet.NewTCPConn(&wq, ep), host)
}

// dial connects to the host destination of a guest flow.
func (t *tcpNAT) dial(id stack.TransportEndpointID) (net.Conn, error) {
	target, err := policy.OutboundTarget(t.e.plan, t.e.cfg, netipAddr(id.LocalAddress))
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: t.e.opts.dialTimeout}
	if la := t.e.outboundFor(target); la.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: la.AsSlice()}
	}
	return d.DialContext(t.e.ctx, "tcp", net.JoinHostPort(target.String(), strconv.Itoa(int(id.LocalPort))))
}

// outboundFor is the local address host sockets to target bind to: the
// --outbound-addr of target's family, except for the host's loopback, which
// is not reachable from an outside address.
func (e *Engine) outboundFor(target netip.Addr) netip.Addr {
	if target.IsLoopback() {
		return netip.Addr{}
	}
	if target.Is4() {
		return e.outbound4
	}
	return e.outbound6
}

// serveConns relays between a guest and a host connection; Close of the
// engine ends it.
func (e *Engine) serveConns(guest, host net.Conn) {
	if !e.conns.add(guest) {
		host.Close()
		return
	}
	defer e.conns.remove(guest)
	if !e.conns.add(host) {
		guest.Close()
		return
	}
	defer e.conns.remove(host)
	e.relay(guest, host)
}

// setKeepalive turns TCP keepalive on for a guest-side endpoint.
func setKeepalive(ep tcpip.Endpoint) {
	ep.SocketOptions().SetKeepAlive(true)
	idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
	_ = ep.SetSockOpt(&idle)
	intvl := tcpip.KeepaliveIntervalOption(keepaliveInterval)
	_ = ep.SetSockOpt(&intvl)
	_ = ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
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
