package engine

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// handshakeAbortRetry is how often Close looks again for the endpoints of
// connection attempts still in flight (one that had not registered its
// handshake's endpoint yet is a few instructions away from it, unless its
// goroutine is descheduled).
const handshakeAbortRetry = 5 * time.Millisecond

// Ending guest handshakes at Close.
//
// stack.Close aborts only the endpoints registered when it lists them. A
// handshake's endpoint registers inside ForwarderRequest.CreateEndpoint,
// which then blocks until the guest's ACK or until gVisor gives up
// retransmitting the SYN-ACK (1+2+...+64 = 127 s): an attempt that
// registered after stack.Close's list kept Close waiting that long. So
// Close first stops new handshakes (stopHandshakes), then, after
// stack.Close, aborts the endpoint of every attempt still in flight
// (inFlight, which holds each attempt from its SYN until it is handed to
// the relay or failed), looking again until none is left.

// stopHandshakes makes every later createEndpoint fail.
func (t *tcpNAT) stopHandshakes() {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
}

// drainHandshakes aborts the handshake endpoint of every connection
// attempt in flight until none is left. Call it after stopHandshakes and
// stack.Close. Attempts end within a few retries once their handshake is
// aborted (or refused by createEndpoint); at worst when the last handshake
// times out by itself.
func (t *tcpNAT) drainHandshakes() {
	for {
		ids := t.inFlightIDs()
		if len(ids) == 0 {
			return
		}
		for _, id := range ids {
			t.abortHandshake(id)
		}
		time.Sleep(handshakeAbortRetry)
	}
}

// inFlightIDs lists the connection attempts in flight.
func (t *tcpNAT) inFlightIDs() []stack.TransportEndpointID {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]stack.TransportEndpointID, 0, len(t.inFlight))
	for id := range t.inFlight {
		ids = append(ids, id)
	}
	return ids
}

// createEndpoint completes the guest's handshake for r (blocking until it
// is established or has failed), unless the engine is closing: then it
// fails at once, and the caller resets the guest as for any failure.
func (t *tcpNAT) createEndpoint(r *tcp.ForwarderRequest, wq *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	t.mu.Lock()
	closing := t.closing
	t.mu.Unlock()
	if closing {
		return nil, &tcpip.ErrConnectionAborted{}
	}
	if h := t.e.opts.beforeHandshake; h != nil {
		h(r.ID())
	}
	return r.CreateEndpoint(wq)
}

// abortHandshake aborts the endpoint of the guest connection id if it is
// registered; its blocked CreateEndpoint then returns an error.
func (t *tcpNAT) abortHandshake(id stack.TransportEndpointID) {
	proto := header.IPv6ProtocolNumber
	if id.LocalAddress.Len() == header.IPv4AddressSize {
		proto = header.IPv4ProtocolNumber
	}
	if ep := t.e.stack.FindTransportEndpoint(proto, tcp.ProtocolNumber, id, nicID); ep != nil {
		ep.Abort()
	}
}
