package link

import (
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxDeferredSYNACKs bounds the SYN-ACKs being written off the caller's
// goroutine; beyond it (a SYN flood) they are written inline.
const maxDeferredSYNACKs = 64

// deferSYNACK writes a lone SYN-ACK on a goroutine of its own and reports
// whether it did. Why: gVisor sends the SYN-ACK of a forwarded connection
// while holding the new endpoint's lock. On a TAP the guest's kernel answers
// within the same writev (its receive path runs in our syscall), so its ACK
// and first data reach the stack before the lock is released, and gVisor's
// TCP processor spins on TryLock, requeueing the endpoint, until the lock
// holder runs again. On two cores that spin competes with the lock holder
// and the guest: it was ~45 % of the engine's CPU in netbench's connection
// test. Written off-lock, the SYN-ACK costs one goroutine start.
func (e *Endpoint) deferSYNACK(pkts []*stack.PacketBuffer) bool {
	if len(pkts) != 1 || !isSYNACK(pkts[0]) {
		return false
	}
	if e.deferred.Add(1) > maxDeferredSYNACKs {
		e.deferred.Add(-1)
		return false
	}
	pkt := pkts[0].IncRef()
	go func() {
		defer e.deferred.Add(-1)
		defer pkt.DecRef()
		e.wmu.Lock()
		defer e.wmu.Unlock()
		_, _ = e.writeLocked([]*stack.PacketBuffer{pkt})
	}()
	return true
}

// isSYNACK reports whether pkt is a TCP segment with SYN and ACK set.
func isSYNACK(pkt *stack.PacketBuffer) bool {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return false
	}
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize {
		return false
	}
	return th.Flags().Contains(header.TCPFlagSyn | header.TCPFlagAck)
}
