package engine

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// heldLink attaches the link under it only once released. gVisor attaches a
// link as soon as its NIC is created, and our link's reader then delivers
// frames at once: before New has installed the TCP and UDP handlers and the
// services, a guest's SYN would be reset and a DNS query refused. The
// supervisor writes --ready-fd without waiting for the engine's start-up,
// so a guest may well send in that window; held, its frames wait in the
// TAP's queue (or the BESS socket's) until the engine can serve them.
type heldLink struct {
	stack.LinkEndpoint

	mu       sync.Mutex
	released bool
	pending  stack.NetworkDispatcher // what Attach was given while held
}

func newHeldLink(ep stack.LinkEndpoint) *heldLink {
	return &heldLink{LinkEndpoint: ep}
}

// Attach implements stack.LinkEndpoint: while held it only records d.
func (h *heldLink) Attach(d stack.NetworkDispatcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		h.pending = d
		return
	}
	h.LinkEndpoint.Attach(d)
}

// IsAttached implements stack.LinkEndpoint.
func (h *heldLink) IsAttached() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		return h.pending != nil
	}
	return h.LinkEndpoint.IsAttached()
}

// release attaches the link to what the stack gave Attach, if anything.
func (h *heldLink) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	h.released = true
	if h.pending != nil {
		h.LinkEndpoint.Attach(h.pending)
		h.pending = nil
	}
}
