package engine

import (
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// handshakeAbortRetry is how often Close looks again for the endpoint of a
// handshake that began before Close but had not registered it yet (a few
// instructions' window, unless the goroutine is descheduled).
const handshakeAbortRetry = 5 * time.Millisecond

// handshakeGate tracks the guest TCP handshakes in progress (the blocking
// ForwarderRequest.CreateEndpoint) so that Engine.Close can end them.
//
// stack.Close aborts only the endpoints registered when it lists them. A
// handshake's endpoint registers inside CreateEndpoint, which then blocks
// until the guest's ACK or until gVisor gives up retransmitting the SYN-ACK
// (1+2+...+64 = 127 s): one that registered after stack.Close's list kept
// Close waiting that long (stack.Wait, and the engine's WaitGroup through
// the connection attempt). So Close first closes the gate (no handshake
// starts after that), then, after stack.Close, aborts the endpoint of each
// handshake still in progress, looking again until every one has ended.
type handshakeGate struct {
	mu      sync.Mutex
	closed  bool
	pending map[stack.TransportEndpointID]struct{}
	idle    chan struct{} // made by drain; closed when pending empties
}

// enter records the start of id's handshake; it returns false once the
// gate is closed.
func (g *handshakeGate) enter(id stack.TransportEndpointID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.pending == nil {
		g.pending = make(map[stack.TransportEndpointID]struct{})
	}
	g.pending[id] = struct{}{}
	return true
}

// leave records the end of id's handshake.
func (g *handshakeGate) leave(id stack.TransportEndpointID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pending, id)
	if len(g.pending) == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// close stops handshakes from starting.
func (g *handshakeGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// drain calls abort for every handshake in progress until none is left.
// Call it after close. It ends within a few retries once abort takes
// effect; at worst (abort never finding an endpoint) when the last
// handshake times out by itself.
func (g *handshakeGate) drain(abort func(stack.TransportEndpointID)) {
	for {
		ids, idle := g.inProgress()
		if len(ids) == 0 {
			return
		}
		for _, id := range ids {
			abort(id)
		}
		select {
		case <-idle:
			return
		case <-time.After(handshakeAbortRetry):
		}
	}
}

// inProgress lists the handshakes in progress and returns a channel that
// closes when they have all ended.
func (g *handshakeGate) inProgress() ([]stack.TransportEndpointID, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		return nil, nil
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	ids := make([]stack.TransportEndpointID, 0, len(g.pending))
	for id := range g.pending {
		ids = append(ids, id)
	}
	return ids, g.idle
}

// createEndpoint completes the guest's handshake for r (blocking until it
// is established or has failed), unless the engine is closing: then it
// fails at once, and the caller resets the guest as for any failure.
func (t *tcpNAT) createEndpoint(r *tcp.ForwarderRequest, wq *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	id := r.ID()
	if !t.e.handshakes.enter(id) {
		return nil, &tcpip.ErrConnectionAborted{}
	}
	defer t.e.handshakes.leave(id)
	if h := t.e.opts.beforeHandshake; h != nil {
		h(id)
	}
	return r.CreateEndpoint(wq)
}

// abortHandshake aborts the endpoint of the guest connection id if it is
// registered; its blocked CreateEndpoint then returns an error.
func (e *Engine) abortHandshake(id stack.TransportEndpointID) {
	proto := header.IPv6ProtocolNumber
	if id.LocalAddress.Len() == header.IPv4AddressSize {
		proto = header.IPv4ProtocolNumber
	}
	if ep := e.stack.FindTransportEndpoint(proto, tcp.ProtocolNumber, id, nicID); ep != nil {
		ep.Abort()
	}
}
